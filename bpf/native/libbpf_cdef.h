/* The part of <bpf/libbpf.h> and <bpf/bpf.h> the controller calls (bpf/libbpf.py),
 * for cffi's API mode (bpf/native/build.py). The option structs end in "...;": the
 * C compiler lays them out from the installed headers, and a field that is missing
 * or changed type there fails the build. Parsed by cffi: no preprocessor lines. */

typedef uint32_t __u32;
typedef uint64_t __u64;

struct bpf_object;
struct bpf_program;
struct bpf_map;
struct ring_buffer;

struct bpf_test_run_opts {
	size_t sz;
	const void *data_in;
	void *data_out;
	__u32 data_size_in;
	__u32 data_size_out;
	const void *ctx_in;
	void *ctx_out;
	__u32 ctx_size_in;
	__u32 ctx_size_out;
	__u32 retval;
	int repeat;
	__u32 duration;
	...;
};
struct bpf_xdp_attach_opts { size_t sz; ...; };
enum bpf_tc_attach_point { BPF_TC_INGRESS, BPF_TC_EGRESS, ... };
struct bpf_tc_hook { size_t sz; int ifindex; enum bpf_tc_attach_point attach_point; ...; };
struct bpf_tc_opts {
	size_t sz;
	int prog_fd;
	__u32 flags;
	__u32 prog_id;
	__u32 handle;
	__u32 priority;
	...;
};
struct bpf_map_batch_opts { size_t sz; __u64 elem_flags; __u64 flags; ...; };
struct bpf_prog_info { __u32 id; ...; };

static const int BPF_ANY;
static const int BPF_NOEXIST;
static const int BPF_EXIST;
static const int XDP_FLAGS_UPDATE_IF_NOEXIST;
static const int XDP_FLAGS_SKB_MODE;
static const int XDP_FLAGS_DRV_MODE;
static const int BPF_MAP_TYPE_PERCPU_HASH;
static const int BPF_MAP_TYPE_PERCPU_ARRAY;
static const int BPF_MAP_TYPE_LRU_PERCPU_HASH;

/* libbpf's messages, formatted in C (they come with a va_list), to Python */
extern "Python" void sft_libbpf_message(int level, const char *text);
void sft_libbpf_route_messages(void);
/* ring buffer records, to the Python RingBuffer whose handle is ctx */
extern "Python" int sft_ring_buffer_record(void *ctx, void *data, size_t size);

struct bpf_object *bpf_object__open_file(const char *path, const void *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj,
						     const char *name);
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
int bpf_program__fd(const struct bpf_program *prog);
int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size);
int bpf_program__pin(struct bpf_program *prog, const char *path);
int bpf_map__fd(const struct bpf_map *map);
int bpf_map__pin(struct bpf_map *map, const char *path);
__u32 bpf_map__value_size(const struct bpf_map *map);
__u32 bpf_map__key_size(const struct bpf_map *map);
__u32 bpf_map__max_entries(const struct bpf_map *map);
int bpf_map__type(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, __u32 max_entries);
int libbpf_num_possible_cpus(void);

int bpf_map_update_elem(int fd, const void *key, const void *value, __u64 flags);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values,
			 __u32 *count, const struct bpf_map_batch_opts *opts);
int bpf_obj_get(const char *pathname);
int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len);
int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);

int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_detach(int ifindex, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_query_id(int ifindex, int flags, __u32 *prog_id);
int bpf_tc_hook_create(struct bpf_tc_hook *hook);
int bpf_tc_hook_destroy(struct bpf_tc_hook *hook);
int bpf_tc_attach(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);
int bpf_tc_detach(const struct bpf_tc_hook *hook, const struct bpf_tc_opts *opts);
int bpf_tc_query(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);

struct ring_buffer *ring_buffer__new(int map_fd, int (*sample_cb)(void *, void *, size_t),
				     void *ctx, const void *opts);
void ring_buffer__free(struct ring_buffer *rb);
int ring_buffer__poll(struct ring_buffer *rb, int timeout_ms);
int ring_buffer__consume(struct ring_buffer *rb);
int ring_buffer__epoll_fd(const struct ring_buffer *rb);

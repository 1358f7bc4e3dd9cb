"""Native modules of the kernel data plane's controller, built with cffi in API
mode at setup time (``build.py``): ``sftd.bpf._keystream`` (``keystream.c``)
and ``sftd.bpf._libbpf`` (``libbpf_cdef.h``)."""

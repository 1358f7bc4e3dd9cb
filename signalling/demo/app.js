// SFT demo: join a Wire-style conference through this SFT from a browser.
// Plain JavaScript, no build step, no external resources.
//
// Protocol (docs/protocol.md): POST CONFCONN to /sft/<convid> and get
// the SFT's SETUP offer; answer with SETUP resp:true to <url>/sft/<convid>;
// then, over the data channel "calling-3.0": answer each CONFPART (authorising
// everyone), send CONFSTREAMS (list mode) so video is forwarded, PING every 5 s.
// Each received slot packet carries one CSRC: the sender's ssrc_audio (audio)
// or ssrc_video (video) from CONFPART, which is how slots map to people.
//
// For tests: window.sftDemo.stats() resolves to getStats() figures by mid,
// per person, and the conference state.
"use strict";

(() => {
  const VERSION = "3.0";
  const PING_INTERVAL_MS = 5000;
  const VSTREAMS = 9;
  const TOOL = "sft-demo";
  const TOOLVER = "0.1.0";
  const UPSTREAM_MIDS = new Set(["audio", "video"]);

  const $ = (id) => document.getElementById(id);

  function randomHex(bytes) {
    const buf = new Uint8Array(bytes);
    crypto.getRandomValues(buf);
    return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ---------------------------------------------------------------- identity
  const params = new URLSearchParams(location.search);
  let convid = (params.get("conv") || "").toLowerCase();
  const convGiven = /^[0-9a-f]{32}$/.test(convid);
  if (!convGiven) {
    convid = randomHex(16);
    params.set("conv", convid);
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }
  const userid = params.get("user") || randomHex(16);
  const clientid = params.get("client") || randomHex(8);
  const sessid = randomHex(4);

  const state = {
    phase: "new", // new, media, joining, connecting, joined, left, failed
    error: null,
    convid, userid, clientid,
    confpart: null, // latest CONFPART from the SFT
    confparts: 0,
    messages: [], // every data-channel message received: {type, resp, src_userid}
    propsyncs: [],
    pongs: 0,
    pingsSent: 0,
    connectionState: "new",
    datachannel: "none",
    muted: false,
    times: {}, // performance.now() of milestones
    byPerson: {}, // "user/client" -> {videoFrames, audioPackets, audioSamples, videoMids, audioMids}
  };

  let pc = null;
  let channel = null;
  let localStream = null;
  let pingTimer = null;
  let sampler = null;
  const slots = new Map(); // mid -> {kind, el, receiver}
  const lastCounts = new Map(); // mid -> {frames, packets, samples}
  const currentCsrc = new Map(); // mid -> csrc (last seen)

  function setStatus(text) {
    $("status").textContent = text;
  }

  // ---------------------------------------------------------------- econn
  // The one place this page builds econn messages (mirrors signalling/econn.py).
  function econn(type, resp, fields) {
    return Object.assign({ version: VERSION, type, sessid, src_userid: userid,
                           src_clientid: clientid, resp }, fields || {});
  }

  function send(msg) {
    if (!channel || channel.readyState !== "open") return false;
    channel.send(JSON.stringify(msg));
    return true;
  }

  async function post(url, msg) {
    const r = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                                 body: JSON.stringify(msg) });
    const text = await r.text();
    if (r.status === 303) throw new Error("the SFT is draining (303); try again");
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${text.trim().slice(0, 200)}`);
    return JSON.parse(text);
  }

  const REJECTIONS = { 1: "client version blacklisted", 2: "authentication invalid",
                       3: "authentication expired", 4: "limit reached",
                       5: "may join but not start a conference" };

  // ---------------------------------------------------------------- people
  function personKey(p) { return `${p.userid}/${p.clientid}`; }

  function others() {
    const list = (state.confpart && state.confpart.participants) || [];
    return list.filter((p) => !(p.userid === userid && p.clientid === clientid));
  }

  function personByCsrc(kind, csrc) {
    const list = (state.confpart && state.confpart.participants) || [];
    const key = kind === "audio" ? "ssrc_audio" : "ssrc_video";
    const p = list.find((q) => Number(q[key]) === csrc);
    return p ? personKey(p) : null;
  }

  function personStats(key) {
    if (!state.byPerson[key]) {
      state.byPerson[key] = { videoFrames: 0, audioPackets: 0, audioSamples: 0,
                              videoPackets: 0, videoMids: [], audioMids: [] };
    }
    return state.byPerson[key];
  }

  // ---------------------------------------------------------------- data channel
  function onMessage(event) {
    let msg;
    try { msg = JSON.parse(event.data); } catch (e) { return; }
    state.messages.push({ type: msg.type, resp: msg.resp, src_userid: msg.src_userid });
    if (state.messages.length > 500) state.messages.shift();
    switch (msg.type) {
      case "CONFPART":
        if (!msg.resp) onConfpart(msg);
        break;
      case "PING":
        if (msg.resp) state.pongs += 1;
        else send(econn("PING", true));
        break;
      case "PROPSYNC":
        state.propsyncs.push({ from: `${msg.src_userid}/${msg.src_clientid}`, props: msg.props });
        break;
      case "HANGUP":
        setStatus("the SFT ended the call");
        break;
      default:
        break;
    }
  }

  function onConfpart(msg) {
    state.confpart = msg;
    state.confparts += 1;
    // Authorise everyone: reply with the same list, authorized:true.
    const participants = (msg.participants || []).map((p) => Object.assign({}, p, { authorized: true }));
    const fields = Object.assign({}, msg, { participants });
    for (const k of ["version", "type", "sessid", "resp", "src_userid", "src_clientid",
                     "dest_userid", "dest_clientid"]) delete fields[k];
    send(econn("CONFPART", true, fields));
    sendConfstreams();
    renderParticipants();
  }

  function sendConfstreams() {
    const streams = others().slice(0, VSTREAMS)
      .map((p) => ({ userid: p.userid, clientid: p.clientid, quality: 0 }));
    send(econn("CONFSTREAMS", false, { mode: "list", streams }));
  }

  function props() {
    return { videosend: "true", screensend: "false", audiocbr: "false",
             muted: state.muted ? "true" : "false" };
  }

  function onDataChannel(event) {
    channel = event.channel;
    state.datachannel = channel.readyState;
    state.times.datachannel = performance.now();
    channel.onmessage = onMessage;
    const opened = () => {
      state.datachannel = "open";
      send(econn("PING", false));
      state.pingsSent += 1;
      send(econn("PROPSYNC", false, { props: props() }));
      pingTimer = setInterval(() => { if (send(econn("PING", false))) state.pingsSent += 1; },
                              PING_INTERVAL_MS);
    };
    if (channel.readyState === "open") opened(); else channel.onopen = opened;
    channel.onclose = () => { state.datachannel = "closed"; };
  }

  // ---------------------------------------------------------------- media
  function onTrack(event) {
    const tr = event.transceiver;
    const mid = tr.mid;
    if (UPSTREAM_MIDS.has(mid) || slots.has(mid)) return;
    const stream = new MediaStream([event.track]);
    if (event.track.kind === "video") {
      const box = document.createElement("div");
      box.className = "slot idle";
      box.dataset.mid = mid;
      const video = document.createElement("video");
      video.autoplay = true; video.muted = true; video.playsInline = true;
      video.srcObject = stream;
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = `slot ${mid}`;
      box.append(video, label);
      $("slots").append(box);
      slots.set(mid, { kind: "video", el: box, label, receiver: tr.receiver });
    } else {
      const audio = document.createElement("audio");
      audio.autoplay = true;
      audio.srcObject = stream;
      audio.dataset.mid = mid;
      $("audio-slots").append(audio);
      slots.set(mid, { kind: "audio", el: audio, receiver: tr.receiver });
    }
  }

  function midOf(s, trackMids) {
    if (s.mid) return s.mid;
    return trackMids.get(s.trackIdentifier) || null;
  }

  // Samples getStats and CSRCs: credits each slot's new frames/packets to the
  // person whose CSRC is on that slot right now.
  async function sample() {
    if (!pc) return null;
    const trackMids = new Map();
    for (const tr of pc.getTransceivers()) {
      if (tr.mid && tr.receiver.track) trackMids.set(tr.receiver.track.id, tr.mid);
    }
    for (const [mid, slot] of slots) {
      const sources = slot.receiver.getContributingSources ? slot.receiver.getContributingSources() : [];
      if (sources.length) {
        const newest = sources.reduce((a, b) => (a.timestamp >= b.timestamp ? a : b));
        currentCsrc.set(mid, newest.source);
      }
    }
    const report = await pc.getStats();
    const out = { framesDecoded: {}, packetsReceived: {}, bytesReceived: {},
                  audio: { packetsReceived: {}, totalSamplesReceived: {}, audioLevel: {},
                           concealedSamples: {} },
                  outbound: {}, candidatePair: null };
    report.forEach((s) => {
      if (s.type === "inbound-rtp") {
        const mid = midOf(s, trackMids);
        if (!mid) return;
        out.packetsReceived[mid] = s.packetsReceived || 0;
        out.bytesReceived[mid] = s.bytesReceived || 0;
        if (s.kind === "video") {
          out.framesDecoded[mid] = s.framesDecoded || 0;
        } else {
          out.audio.packetsReceived[mid] = s.packetsReceived || 0;
          out.audio.totalSamplesReceived[mid] = s.totalSamplesReceived || 0;
          out.audio.concealedSamples[mid] = s.concealedSamples || 0;
          if (s.audioLevel !== undefined) out.audio.audioLevel[mid] = s.audioLevel;
        }
      } else if (s.type === "outbound-rtp") {
        const key = `${s.kind}${s.rid ? ":" + s.rid : ""}`;
        out.outbound[key] = { packetsSent: s.packetsSent || 0, framesEncoded: s.framesEncoded,
                              bytesSent: s.bytesSent || 0, framesPerSecond: s.framesPerSecond,
                              frameWidth: s.frameWidth };
      } else if (s.type === "transport" && s.selectedCandidatePairId) {
        const pair = report.get(s.selectedCandidatePairId);
        const addr = (id) => { const c = id && report.get(id); return c ? `${c.address}:${c.port}` : null; };
        if (pair) {
          out.candidatePair = { local: addr(pair.localCandidateId), remote: addr(pair.remoteCandidateId),
                                bytesSent: pair.bytesSent, bytesReceived: pair.bytesReceived,
                                // the sender's bandwidth estimate, fed by transport-wide feedback
                                availableOutgoingBitrate: pair.availableOutgoingBitrate };
        }
      }
    });
    const now = performance.now();
    for (const [mid, slot] of slots) {
      const frames = out.framesDecoded[mid] || 0;
      const packets = out.packetsReceived[mid] || 0;
      const samples = out.audio.totalSamplesReceived[mid] || 0;
      const last = lastCounts.get(mid) || { frames: 0, packets: 0, samples: 0 };
      // getStats() calls may overlap; never let a stale report move counts back.
      lastCounts.set(mid, { frames: Math.max(frames, last.frames),
                            packets: Math.max(packets, last.packets),
                            samples: Math.max(samples, last.samples) });
      const csrc = currentCsrc.get(mid);
      const who = csrc === undefined ? null : personByCsrc(slot.kind, csrc);
      if (slot.kind === "video") {
        if (frames > 0 && state.times.firstVideo === undefined) state.times.firstVideo = now;
        if (slot.label) {
          slot.label.textContent = who ? `slot ${mid}: ${who.slice(0, 12)}…` : `slot ${mid}`;
          slot.el.classList.toggle("idle", frames === last.frames);
        }
      } else if (samples > 0 && state.times.firstAudio === undefined) {
        state.times.firstAudio = now;
      }
      if (!who) continue;
      const ps = personStats(who);
      if (slot.kind === "video") {
        ps.videoFrames += Math.max(0, frames - last.frames);
        ps.videoPackets += Math.max(0, packets - last.packets);
        if (frames > last.frames && !ps.videoMids.includes(mid)) ps.videoMids.push(mid);
      } else {
        ps.audioPackets += Math.max(0, packets - last.packets);
        ps.audioSamples += Math.max(0, samples - last.samples);
        if (packets > last.packets && !ps.audioMids.includes(mid)) ps.audioMids.push(mid);
      }
    }
    const sources = {};
    for (const [mid, csrc] of currentCsrc) sources[mid] = csrc;
    out.csrcs = sources;
    return out;
  }

  function startSampler() {
    // Fast until the first video frame (join time), then every 500 ms.
    const tick = async () => {
      try { await sample(); } catch (e) { /* closed */ }
      if (state.phase === "left" || state.phase === "failed") return;
      sampler = setTimeout(tick, state.times.firstVideo === undefined ? 50 : 500);
    };
    tick();
  }

  function renderParticipants() {
    const ol = $("participants");
    ol.textContent = "";
    for (const p of (state.confpart && state.confpart.participants) || []) {
      const li = document.createElement("li");
      const me = p.userid === userid && p.clientid === clientid;
      li.textContent = `${p.userid}/${p.clientid}${me ? " (you)" : ""}${p.muted ? " 🔇" : ""}`;
      if (me) li.className = "me";
      ol.append(li);
    }
  }

  // ---------------------------------------------------------------- join / leave
  function waitGathered(timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, timeoutMs);
    });
  }

  async function join() {
    state.phase = "media";
    setStatus("opening camera and microphone…");
    localStream = await navigator.mediaDevices.getUserMedia({
      audio: true, video: { width: 320, height: 240, frameRate: 15 } });
    $("local").srcObject = localStream;

    state.phase = "joining";
    setStatus("joining…");
    state.times.confconn = performance.now();
    const reply = await post(`/sft/${convid}`, econn("CONFCONN", false, {
      dest_userid: "SFT", status: 0, update: false, selective_audio: true,
      selective_video: true, vstreams: VSTREAMS, tool: TOOL, toolver: TOOLVER, ice_servers: [] }));
    if (reply.type === "CONFCONN") {
      throw new Error(`rejected: ${REJECTIONS[reply.status] || "status " + reply.status}`);
    }
    if (reply.type !== "SETUP" || !reply.sdp) throw new Error(`unexpected reply ${reply.type}`);
    state.times.offer = performance.now();

    pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle",
                                 rtcpMuxPolicy: "require" });
    pc.ondatachannel = onDataChannel;
    pc.ontrack = onTrack;
    pc.onconnectionstatechange = () => {
      state.connectionState = pc.connectionState;
      if (pc.connectionState === "connected" && state.times.connected === undefined) {
        state.times.connected = performance.now();
        setStatus("connected");
      }
      if (pc.connectionState === "failed") setStatus("connection failed");
    };

    await pc.setRemoteDescription({ type: "offer", sdp: reply.sdp });
    const [audioTrack] = localStream.getAudioTracks();
    const [videoTrack] = localStream.getVideoTracks();
    for (const tr of pc.getTransceivers()) {
      if (tr.mid === "audio" && audioTrack) {
        await tr.sender.replaceTrack(audioTrack);
        tr.sender.setStreams(localStream);
        tr.direction = "sendrecv";
      } else if (tr.mid === "video" && videoTrack) {
        await tr.sender.replaceTrack(videoTrack);
        tr.sender.setStreams(localStream);
        tr.direction = "sendrecv";
      } else if (tr.mid !== null && !UPSTREAM_MIDS.has(tr.mid)) {
        tr.direction = "recvonly";
      }
    }
    await pc.setLocalDescription(await pc.createAnswer());
    await waitGathered(3000);

    state.phase = "connecting";
    // Post the answer to the SFT that made the offer (its "url"), on our origin:
    // the path carries the routing (e.g. /sfts/<pod>), the page cannot go cross-origin.
    const target = new URL(reply.url || location.origin, location.href);
    const base = target.origin === location.origin ? target.href : location.origin + target.pathname;
    const ack = await post(`${base.replace(/\/+$/, "")}/sft/${convid}`, econn("SETUP", true, {
      sdp: pc.localDescription.sdp, props: props() }));
    if (ack.type !== "CONFCONN" || (ack.status || 0) !== 0) {
      throw new Error(`answer refused: ${JSON.stringify(ack).slice(0, 200)}`);
    }
    state.phase = "joined";
    $("hangup").disabled = false;
    $("mute").disabled = false;
    startSampler();
  }

  // CONFCONN update:true: the SFT re-offers with new ICE credentials on the
  // same leg; DTLS and the data channel stay.
  async function restartIce() {
    const offer = await post(`/sft/${convid}`, econn("CONFCONN", false, {
      dest_userid: "SFT", status: 0, update: true, selective_audio: true,
      selective_video: true, vstreams: VSTREAMS, tool: TOOL, toolver: TOOLVER, ice_servers: [] }));
    // the SFT answers an update with an UPDATE offer (a SETUP from older servers)
    if (!["UPDATE", "SETUP"].includes(offer.type) || !offer.sdp) {
      throw new Error(`unexpected reply ${offer.type}`);
    }
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await waitGathered(3000);
    const ack = await post(`/sft/${convid}`, econn(offer.type, true, {
      sdp: pc.localDescription.sdp, props: props() }));
    if (ack.type !== "CONFCONN" || (ack.status || 0) !== 0) {
      throw new Error(`restart answer refused: ${JSON.stringify(ack).slice(0, 200)}`);
    }
    state.iceRestarts = (state.iceRestarts || 0) + 1;
    return offer.sdp.match(/a=ice-ufrag:(\S+)/)[1];
  }

  async function hangup() {
    send(econn("HANGUP", false));
    state.phase = "left";
    if (pingTimer) clearInterval(pingTimer);
    if (sampler) clearTimeout(sampler);
    await new Promise((r) => setTimeout(r, 200));
    if (pc) pc.close();
    if (localStream) localStream.getTracks().forEach((t) => t.stop());
    $("hangup").disabled = true;
    $("mute").disabled = true;
    setStatus("left the call");
  }

  function toggleMute() {
    state.muted = !state.muted;
    if (localStream) localStream.getAudioTracks().forEach((t) => { t.enabled = !state.muted; });
    $("mute").textContent = state.muted ? "unmute" : "mute";
    send(econn("PROPSYNC", false, { props: props() }));
  }

  // ---------------------------------------------------------------- page
  const share = `${location.origin}${location.pathname}?conv=${convid}`;
  $("convid").textContent = convid;
  $("share").href = share;
  $("share").textContent = share;
  $("myid").textContent = `${userid.slice(0, 12)}…`;
  $("copy").onclick = () => navigator.clipboard && navigator.clipboard.writeText(share);
  $("hangup").onclick = hangup;
  $("mute").onclick = toggleMute;

  function ms(t) {
    return t === undefined || state.times.confconn === undefined
      ? null : Math.round(t - state.times.confconn);
  }

  window.sftDemo = {
    state,
    hangup,
    restartIce,
    toggleMute,
    sendConfstreams,
    async stats() {
      const media = (await sample()) || { framesDecoded: {}, packetsReceived: {}, audio: {} };
      return Object.assign(media, {
        phase: state.phase, error: state.error, convid, userid, clientid,
        connectionState: state.connectionState, datachannel: state.datachannel,
        participants: ((state.confpart && state.confpart.participants) || [])
          .map((p) => ({ userid: p.userid, clientid: p.clientid, ssrc_audio: p.ssrc_audio,
                         ssrc_video: p.ssrc_video })),
        confparts: state.confparts, pongs: state.pongs, pingsSent: state.pingsSent,
        messageTypes: state.messages.map((m) => m.type + (m.resp ? "/resp" : "")),
        byPerson: JSON.parse(JSON.stringify(state.byPerson)),
        joinMs: { offer: ms(state.times.offer), connected: ms(state.times.connected),
                  datachannel: ms(state.times.datachannel), firstVideo: ms(state.times.firstVideo),
                  firstAudio: ms(state.times.firstAudio) },
      });
    },
  };

  join().catch((err) => {
    state.phase = "failed";
    state.error = String(err && err.message ? err.message : err);
    setStatus(`failed: ${state.error}`);
    console.error("sft demo:", err);
  });
})();

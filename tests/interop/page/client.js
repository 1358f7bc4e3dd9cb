// One Wire client: its own @wireapp/avs instance (emscripten module, avs_pc
// globals, frame-encryption worker) in this iframe. The parent page plays the
// Wire backend and drives it through window.avsClient.
"use strict";

const AVS_DIST = "avs/";  // relative: served beside this page
const CALL_TYPE_VIDEO = 1;
const CONV_TYPE_CONFERENCE = 2;
const VIDEO_STATE_STOPPED = 0;
const VIDEO_STATE_STARTED = 1;
const VSTREAMS_LIST = 0;
const QUALITY_HIGH = 2;
const LOG_KEEP = 3000;

// Every peer connection AVS creates, for getStats() and the receivers' CSRCs.
const peerConnections = [];
const NativePeerConnection = window.RTCPeerConnection;
window.RTCPeerConnection = function (config) {
  const pc = new NativePeerConnection(config);
  peerConnections.push(pc);
  return pc;
};
window.RTCPeerConnection.prototype = NativePeerConnection.prototype;
Object.setPrototypeOf(window.RTCPeerConnection, NativePeerConnection);

// The npm package is CommonJS: evaluate each file with a small require().
const loaded = {};
async function loadCommonJs(name) {
  if (loaded[name]) return loaded[name];
  const response = await fetch(`${AVS_DIST}${name}.js`);
  if (!response.ok) throw new Error(`${name}.js: HTTP ${response.status}`);
  const source = await response.text();
  const module = { exports: {} };
  const require = (path) => {
    const dep = path.replace(/^\.\//, "").replace(/\.js$/, "");
    if (!loaded[dep]) throw new Error(`${name}.js requires ${path}, not loaded yet`);
    return loaded[dep];
  };
  new Function("module", "exports", "require", "__filename", source)(
    module, module.exports, require, `${AVS_DIST}${name}.js`);
  loaded[name] = module.exports;
  return module.exports;
}

const state = {
  userid: null, clientid: null, convid: null, wuser: 0, version: null,
  callState: null, incoming: [], closed: [], estab: [], members: null,
  memberHistory: [], log: [], mediaLog: [], logMatches: {}, videoStates: {},
  trackOwner: {},      // receiver track id -> "userid/clientid" (AVS's own mapping)
  csrcSeen: {},        // CSRC -> last time seen on an audio receiver
  localStream: null, errors: [],
};
// Lines of AVS's log the test counts (errors also keep the line itself).
const LOG_PATTERNS = {
  selective: /selective_audio: YES selective_video: YES/,
  setRemoteFailed: /setRemoteDescription.*(fail|error)|failed to set remote/i,
  encodedStreamsTwice: /Encoded streams already created/,
  hangupUnanswered: /timeout waiting for HANGUP\(r\)/,
  peerConnectionCreated: /create_pc\(.*new pc created/,
  // frame-encryption trouble: why a member's video would not decode
  decryptNoUserinfo: /decryptFrame: no userinfo/,
  encryptVideoNoCsrc: /frame_enc: encrypt: first frame encrypted type: video .*csrc: 0\b/,
};
// Lines kept apart for a failure report: frame encryption and SSRC updates.
const MEDIA_LOG = /frame_enc|frame_dec|decryptFrame|UpdateSsrc|setMediaKey/;
const MEDIA_LOG_KEEP = 30;
const ERROR_PATTERNS = new Set(["setRemoteFailed", "encodedStreamsTwice", "hangupUnanswered"]);

function noteLog(level, message) {
  const line = `${level} ${String(message).trim()}`;
  state.log.push(line);
  if (state.log.length > LOG_KEEP) state.log.splice(0, state.log.length - LOG_KEEP);
  if (MEDIA_LOG.test(line)) {
    state.mediaLog.push(`${Date.now()} ${line.slice(0, 200)}`);
    if (state.mediaLog.length > MEDIA_LOG_KEEP) state.mediaLog.shift();
  }
  for (const [key, re] of Object.entries(LOG_PATTERNS)) {
    if (re.test(line)) {
      state.logMatches[key] = (state.logMatches[key] || 0) + 1;
      if (ERROR_PATTERNS.has(key)) state.errors.push(line);
    }
  }
}

function person(userid, clientid) {
  return `${userid}/${clientid}`;
}

function attach(kind, id, stream) {
  const elementId = `${kind}-${id}`;
  let el = document.getElementById(elementId);
  if (!stream) {
    if (el) el.remove();
    return;
  }
  if (!el) {
    el = document.createElement(kind);
    el.id = elementId;
    el.autoplay = true;
    el.playsInline = true;
    if (kind === "video") {
      el.muted = true;
      el.width = 160;
      el.height = 90;
    }
    document.getElementById("media").appendChild(el);
  }
  el.srcObject = stream;
  el.play().catch(() => {});
}

function sampleCsrcs() {
  const now = Date.now();
  for (const pc of peerConnections) {
    for (const receiver of pc.getReceivers()) {
      if (receiver.track.kind !== "audio") continue;
      for (const source of receiver.getContributingSources()) {
        state.csrcSeen[source.source] = now;
      }
    }
  }
}

async function init({ userid, clientid, convid, sftUrl, backend }) {
  Object.assign(state, { userid, clientid, convid });
  await loadCommonJs("avs_core");
  await loadCommonJs("avs_pc");
  const avs = await loadCommonJs("avs_wcall");
  const wcall = await avs.getAvsInstance();
  state.wcall = wcall;
  state.backend = backend;

  wcall.setLogHandler((level, message) => noteLog(level, message));
  wcall.init(0);  // ENV.DEFAULT: Chromium
  wcall.setUserMediaHandler(async (conv, useAudio, useVideo, useScreen) => {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: useAudio,
      video: useVideo || useScreen ? { width: 640, height: 360, frameRate: 15 } : false,
    });
    state.localStream = stream;
    return stream;
  });
  wcall.setAudioStreamHandler((conv, streamId, streams) => {
    attach("audio", streamId.replace(/[^\w-]/g, "_"), streams && streams[0]);
  });
  wcall.setVideoStreamHandler((conv, remoteUser, remoteClient, streams) => {
    const who = person(remoteUser, remoteClient);
    for (const [track, owner] of Object.entries(state.trackOwner)) {
      if (owner === who) delete state.trackOwner[track];
    }
    const stream = streams && streams[0];
    if (stream) {
      for (const track of stream.getVideoTracks()) state.trackOwner[track.id] = who;
    }
    attach("video", who.replace(/[^\w-]/g, "_"), stream);
  });
  setInterval(() => wcall.poll(), 500);  // the engine's timers (as the webapp does)
  setInterval(sampleCsrcs, 250);

  const ready = new Promise((resolve) => {
    state.wuser = wcall.create(
      userid, clientid,
      (version) => { state.version = version; resolve(); },
      (ctx, conv, selfUser, selfClient, targets, unused, data) => {
        backend.send(state.clientid, conv, data, targets ? JSON.parse(targets) : null);
        return 0;
      },
      (ctx, url, data) => {
        sftRequest(ctx, url, data);
        return 0;
      },
      (conv, msgTime, fromUser, fromClient, video, shouldRing, convType) => {
        state.incoming.push({ conv, fromUser, fromClient, video, shouldRing, convType });
      },
      () => {},
      () => {},
      (conv, u, c) => state.estab.push(person(u, c)),
      (reason, conv, msgTime, u, c) => state.closed.push({ reason, conv, at: Date.now() }),
      () => {},
      () => {
        setTimeout(() => wcall.configUpdate(state.wuser, 0, JSON.stringify({
          sft_servers: [{ urls: [sftUrl] }],
          sft_servers_all: [{ urls: [sftUrl] }],
          is_federating: false,
          ttl: 3600,
        })), 0);
        return 0;
      },
      () => {},
      (conv, u, c, videoState) => { state.videoStates[person(u, c)] = videoState; },
    );
  });
  wcall.setStateHandler(state.wuser, (conv, callState) => { state.callState = callState; });
  wcall.setReqClientsHandler(state.wuser, (wuser, conv) => {
    setTimeout(() => pushClients(), 0);
  });
  wcall.setParticipantChangedHandler(state.wuser, (conv, json) => {
    const parsed = JSON.parse(json);
    state.members = parsed.members;
    state.memberHistory.push({ at: Date.now(), members: parsed.members });
    // Ask for every member's video, as the webapp's grid does.
    const clients = parsed.members
      .filter((m) => m.userid !== state.userid || m.clientid !== state.clientid)
      .map((m) => ({ userid: m.userid, clientid: m.clientid, quality: QUALITY_HIGH }));
    setTimeout(() => wcall.requestVideoStreams(
      state.wuser, state.convid, VSTREAMS_LIST, JSON.stringify({ convid: state.convid, clients })), 0);
  });
  await ready;
}

async function sftRequest(ctx, url, data) {
  try {
    const response = await fetch(url, { method: "POST", body: data });
    const text = await response.text();
    state.wcall.sftResp(state.wuser, response.status, text, text.length, ctx);
  } catch (err) {
    noteLog(2, `test page: SFT request to ${url} failed: ${err}`);
    state.wcall.sftResp(state.wuser, 1000, "", 0, ctx);
  }
}

function pushClients() {
  const clients = state.backend.clients();
  state.wcall.setClientsForConv(state.wuser, state.convid, JSON.stringify({ clients }));
}

function receive(data, fromUser, fromClient) {
  const now = Math.floor(Date.now() / 1000);
  state.wcall.recvMsg(state.wuser, data, data.length, now, now, state.convid,
    fromUser, fromClient, CONV_TYPE_CONFERENCE, 0);
}

function start() {
  return state.wcall.start(state.wuser, state.convid, CALL_TYPE_VIDEO, CONV_TYPE_CONFERENCE, 0, 0);
}

function answer() {
  return state.wcall.answer(state.wuser, state.convid, CALL_TYPE_VIDEO, 0);
}

function setMute(muted) {
  state.wcall.setMute(state.wuser, muted ? 1 : 0);
}

function setCamera(on) {
  state.wcall.setVideoSendState(state.wuser, state.convid,
    on ? VIDEO_STATE_STARTED : VIDEO_STATE_STOPPED);
}

function end() {
  state.wcall.end(state.wuser, state.convid);
}

// What the test asserts on: AVS's own view plus getStats() of its connections.
async function stats() {
  const inboundVideo = [];
  const outbound = [];
  let availableOutgoingBitrate = null;
  const connections = [];
  for (const pc of peerConnections) {
    connections.push({ connectionState: pc.connectionState, signalingState: pc.signalingState });
    if (pc.connectionState === "closed") continue;
    const report = await pc.getStats();
    let selectedPair = null;
    report.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) selectedPair = s.selectedCandidatePairId;
    });
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        inboundVideo.push({
          ssrc: s.ssrc, mid: s.mid, trackIdentifier: s.trackIdentifier,
          owner: state.trackOwner[s.trackIdentifier] || null,
          framesDecoded: s.framesDecoded || 0, packetsReceived: s.packetsReceived || 0,
          framesReceived: s.framesReceived || 0, keyFramesDecoded: s.keyFramesDecoded || 0,
          framesDropped: s.framesDropped || 0, pliCount: s.pliCount || 0, firCount: s.firCount || 0,
        });
      } else if (s.type === "outbound-rtp") {
        outbound.push({
          kind: s.kind, ssrc: s.ssrc, rid: s.rid || null, active: s.active,
          framesEncoded: s.framesEncoded || 0, framesPerSecond: s.framesPerSecond || 0,
          packetsSent: s.packetsSent || 0, bytesSent: s.bytesSent || 0,
          qualityLimitationReason: s.qualityLimitationReason || null,
          keyFramesEncoded: s.keyFramesEncoded || 0, pliCount: s.pliCount || 0,
          firCount: s.firCount || 0,
        });
      } else if (s.type === "candidate-pair" && s.id === selectedPair) {
        availableOutgoingBitrate = s.availableOutgoingBitrate ?? null;
      }
    });
  }
  return {
    person: person(state.userid, state.clientid), callState: state.callState,
    members: state.members, incoming: state.incoming.length, estab: state.estab,
    closed: state.closed, videoStates: state.videoStates, logMatches: state.logMatches,
    errors: state.errors.slice(-20), mediaLog: state.mediaLog, csrcSeen: state.csrcSeen, inboundVideo, outbound,
    availableOutgoingBitrate, connections, at: Date.now(),
  };
}

function logTail(lines) {
  return state.log.slice(-lines);
}

window.avsClient = { init, receive, start, answer, setMute, setCamera, end, stats, logTail, pushClients };

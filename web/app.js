// facecast browser client.
//
// Flow: create a session → open its events WebSocket → pull the avatar's
// audio+video over WHEP. ES modules, no dependencies, works offline.

import { sendOffer } from './signalling.js';

const API = '/api/v1/sessions';
const ICE_GATHER_TIMEOUT_MS = 2000;
const WHEP_TIMEOUT_MS = 15000;
const MEDIA_MAX_RETRIES = 5;
const EVENTS_MAX_RETRIES = 5;
// A 'disconnected' peer often recovers by itself (brief network blip), so
// wait this long before tearing it down and negotiating a new one.
const DISCONNECT_GRACE_MS = 4000;
const LOG_LIMIT = 8;

// ---------------------------------------------------------------------------
// DOM
// ---------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const el = {
  avatarSelect: $('avatar-select'),
  askToggle: $('ask-toggle'),
  badge: $('badge'),
  badgeText: $('badge-text'),
  video: $('video'),
  fps: $('stat-fps'),
  kbps: $('stat-kbps'),
  rtt: $('stat-rtt'),
  speaking: $('speaking'),
  muteToggle: $('mute-toggle'),
  veil: $('veil'),
  veilSpinner: $('veil-spinner'),
  veilText: $('veil-text'),
  veilAction: $('veil-action'),
  soundOverlay: $('sound-overlay'),
  form: $('say-form'),
  text: $('say-text'),
  speak: $('speak-btn'),
  interrupt: $('interrupt-btn'),
  intensity: $('intensity'),
  intensityValue: $('intensity-value'),
  log: $('log'),
  sessionId: $('session-id'),
  viewers: $('viewer-count'),
  toasts: $('toasts'),
  mic: $('mic-btn'),
  ptt: $('ptt-toggle'),
  transcript: $('transcript'),
};

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/// This tab's conversation: named once, kept across reloads (sessionStorage is per tab).
function conversationName() {
  const key = 'facecast-conversation';
  let name = sessionStorage.getItem(key);
  if (!name) {
    name = 'web-' + Array.from(crypto.getRandomValues(new Uint8Array(12)),
      (b) => b.toString(16).padStart(2, '0')).join('');
    sessionStorage.setItem(key, name);
  }
  return name;
}

const state = {
  session: null,        // {id, whep_url, events_url}
  pc: null,             // current RTCPeerConnection
  viewerUrl: null,      // WHEP resource (Location header) for the current pc
  ws: null,
  ended: false,         // session is over; stop every reconnect loop
  everLive: false,      // distinguishes "connecting" from "reconnecting" in the badge
  mediaRetries: 0,
  mediaTimer: 0,
  disconnectTimer: 0,
  eventsRetries: 0,
  eventsTimer: 0,
  startTimer: 0,
  soundEnabled: false,  // user has unmuted once (a gesture happened)
  // Every start()/teardown bumps this, so async work begun for an older
  // session can tell it is stale and quietly give up.
  epoch: 0,
};

// Kept as one array for the page's lifetime: tests hold a reference to it.
const receivedEvents = [];

// ---------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, { status = 0, code = '', retryAfter = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** Turn a non-2xx response into an ApiError carrying the server's `message`. */
async function errorFrom(res) {
  let message = `${res.status} ${res.statusText}`.trim();
  let code = '';
  const body = await res.text().catch(() => '');
  try {
    const json = JSON.parse(body);
    if (json && typeof json.message === 'string') message = json.message;
    if (json && typeof json.code === 'string') code = json.code;
  } catch {
    if (body && body.length < 300) message = body.trim();
  }
  const ra = Number.parseInt(res.headers.get('Retry-After') ?? '', 10);
  return new ApiError(message, {
    status: res.status,
    code,
    retryAfter: Number.isFinite(ra) && ra >= 0 ? ra : null,
  });
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError('Cannot reach the server. Check your connection.');
  }
  if (!res.ok) throw await errorFrom(res);
  if (res.status === 204) return null;
  const text = await res.text();
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return text; // 2xx with a non-JSON body: nothing structured to hand back
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Exponential backoff with jitter so many tabs don't retry in lockstep. */
const backoff = (attempt, base = 1000, cap = 15000) =>
  Math.min(cap, base * 2 ** attempt) * (0.8 + Math.random() * 0.4);

// ---------------------------------------------------------------------------
// UI helpers
// ---------------------------------------------------------------------------

const BADGE_TEXT = {
  connecting: 'Connecting',
  live: 'Live',
  reconnecting: 'Reconnecting',
  ended: 'Ended',
  error: 'Error',
};

function setBadge(kind) {
  el.badge.dataset.state = kind;
  el.badgeText.textContent = BADGE_TEXT[kind];
}

/**
 * Cover the video with a message. `action` = {label, onClick} adds a button;
 * `spinner` shows the busy indicator. Pass null to reveal the video.
 */
function setVeil(message, { spinner = true, action = null } = {}) {
  if (message == null) {
    el.veil.classList.add('is-hidden');
    el.veilAction.hidden = true;
  } else {
    el.veil.classList.remove('is-hidden');
    el.veilText.textContent = message;
    el.veilSpinner.hidden = !spinner;
    el.veilAction.hidden = !action;
    if (action) {
      el.veilAction.textContent = action.label;
      el.veilAction.onclick = () => action.onClick();
    }
  }
  // The sound prompt sits where the veil's message does; show one at a time.
  updateSoundUi();
}

const veilShown = () => !el.veil.classList.contains('is-hidden');

function setControlsEnabled(on) {
  el.text.disabled = !on;
  el.speak.disabled = !on;
  el.interrupt.disabled = !on;
  el.mic.disabled = !on || !navigator.mediaDevices?.getUserMedia;
}

function toast(message, kind = 'error', ms = 6000) {
  const node = document.createElement('div');
  node.className = `toast ${kind}`;
  const p = document.createElement('p');
  p.textContent = message;
  const close = document.createElement('button');
  close.type = 'button';
  close.textContent = '×';
  close.setAttribute('aria-label', 'Dismiss');
  close.onclick = () => node.remove();
  node.append(p, close);
  el.toasts.append(node);
  // Cap the stack: an error storm shouldn't bury the page.
  while (el.toasts.children.length > 3) el.toasts.firstElementChild.remove();
  setTimeout(() => node.remove(), ms);
}

/**
 * Append to the compact event log (newest first). `tone` styles the entry:
 * 'local' for client-side happenings, 'error', 'ok', or '' for server events.
 */
function log(type, detail = '', tone = '') {
  const li = document.createElement('li');
  if (tone) li.className = tone;
  const time = document.createElement('time');
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString([], { hour12: false });
  const t = document.createElement('span');
  t.className = 'type';
  t.textContent = type;
  const d = document.createElement('span');
  d.className = 'detail';
  d.textContent = detail;
  d.title = detail;
  li.append(time, t, d);
  el.log.prepend(li);
  while (el.log.children.length > LOG_LIMIT) el.log.lastElementChild.remove();
}

function setSpeaking(on) {
  el.speaking.hidden = !on;
}

// ---------------------------------------------------------------------------
// Sound: autoplay policy
// ---------------------------------------------------------------------------

// Browsers only allow muted autoplay, so the stream starts muted and we offer
// an explicit "enable sound" click; the click is the gesture that lets us unmute.

function updateSoundUi() {
  const hasMedia = !!el.video.srcObject && !state.ended;
  el.soundOverlay.hidden = !hasMedia || state.soundEnabled || veilShown();
  el.muteToggle.hidden = !hasMedia || !state.soundEnabled;
  el.muteToggle.setAttribute('aria-pressed', String(el.video.muted));
  el.muteToggle.setAttribute('aria-label', el.video.muted ? 'Unmute sound' : 'Mute sound');
}

function enableSound() {
  state.soundEnabled = true;
  el.video.muted = false;
  // play() can still reject (e.g. no gesture after all); fall back to muted
  // playback and bring the overlay back rather than leaving a frozen frame.
  el.video.play().catch(() => {
    state.soundEnabled = false;
    el.video.muted = true;
    el.video.play().catch(() => {});
    updateSoundUi();
  });
  updateSoundUi();
}

el.soundOverlay.addEventListener('click', () => {
  enableSound();
  el.text.focus();
});

el.muteToggle.addEventListener('click', () => {
  el.video.muted = !el.video.muted;
  if (!el.video.muted) el.video.play().catch(() => {});
  updateSoundUi();
});

// ---------------------------------------------------------------------------
// Session lifecycle
// ---------------------------------------------------------------------------

async function start() {
  const epoch = ++state.epoch;
  // Restarting (after "ended" or a failure): drop whatever is left of the old one.
  clearTimers();
  closePeer({ notifyServer: true });
  closeEvents();
  el.video.srcObject = null;
  state.ended = false;
  state.everLive = false;
  state.session = null;
  state.mediaRetries = 0;
  state.eventsRetries = 0;
  setBadge('connecting');
  setSpeaking(false);
  setControlsEnabled(false);
  el.sessionId.textContent = '—';
  el.viewers.textContent = '';
  setVeil('Starting session…');

  let session;
  for (let attempt = 0; ; attempt++) {
    try {
      // Registered photo/video avatars talk through the server's neural lip-sync. The tab's
      // conversation name lets a reload (or another avatar) continue the same conversation.
      const body = { conversation: conversationName() };
      if (state.avatar !== 'default') body.avatar = state.avatar;
      session = await api('POST', API, body);
      break;
    } catch (err) {
      if (epoch !== state.epoch) return;
      if (err.status === 503) {
        // Server is at capacity: wait as long as it asked, counting down.
        const wait = err.retryAfter ?? 5;
        log('server busy', `retrying in ${wait}s`, 'local');
        for (let s = wait; s > 0; s--) {
          setVeil(`All avatars are busy right now. Trying again in ${s}s…`);
          await sleep(1000);
          if (epoch !== state.epoch) return;
        }
        setVeil('Starting session…');
        continue;
      }
      if (attempt < 3 && (err.status === 0 || err.status >= 500)) {
        await sleep(backoff(attempt));
        if (epoch !== state.epoch) return;
        continue;
      }
      fail(`Could not start a session: ${err.message}`, { label: 'Try again', onClick: start });
      return;
    }
  }
  if (epoch !== state.epoch) {
    // A newer start() superseded this one; don't leak the session we just got.
    deleteSession(session.id);
    return;
  }

  state.session = session;
  el.sessionId.textContent = session.id;
  log('session', session.id, 'local');
  setControlsEnabled(true);
  setVeil('Connecting to avatar…');
  openEvents();
  connectMedia();
}

/** Terminal failure: red badge, message shown inline over the video, optional action. */
function fail(message, action = null) {
  setBadge('error');
  setVeil(message, { spinner: false, action });
  log('error', message, 'error');
}

function endSession(reason) {
  if (state.ended) return;
  state.ended = true;
  clearTimers();
  closePeer({ notifyServer: false });
  closeEvents();
  el.video.srcObject = null;
  setBadge('ended');
  setSpeaking(false);
  setControlsEnabled(false);
  updateSoundUi();
  setVeil(reason ? `Session ended: ${reason}` : 'Session ended', {
    spinner: false,
    action: { label: 'Start new session', onClick: start },
  });
}

function clearTimers() {
  clearTimeout(state.mediaTimer);
  clearTimeout(state.disconnectTimer);
  clearTimeout(state.eventsTimer);
  state.mediaTimer = state.disconnectTimer = state.eventsTimer = 0;
}

function deleteSession(id) {
  // keepalive lets the request outlive the page during unload.
  return fetch(`${API}/${encodeURIComponent(id)}`, { method: 'DELETE', keepalive: true })
    .catch(() => {});
}

// ---------------------------------------------------------------------------
// WHEP media
// ---------------------------------------------------------------------------

/** Resolves when ICE gathering completes, or after `ms` with whatever we have. */
async function connectMedia() {
  const session = state.session;
  if (!session || state.ended) return;
  closePeer({ notifyServer: true });

  const pc = new RTCPeerConnection({ iceServers: [] });
  state.pc = pc;
  resetStats();

  // The server may not signal msids, so don't rely on event.streams: collect
  // both tracks into one stream we own.
  const stream = new MediaStream();
  pc.addEventListener('track', (ev) => {
    if (pc !== state.pc) return;
    stream.addTrack(ev.track);
    if (el.video.srcObject !== stream) el.video.srcObject = stream;
    el.video.play().catch(() => {});
    updateSoundUi();
  });
  pc.addEventListener('connectionstatechange', () => onPeerState(pc));

  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });

  try {
    let res;
    let viewerUrl;
    try {
      ({ res, resource: viewerUrl } = await sendOffer(pc, session.whep_url, {
        gatherMs: ICE_GATHER_TIMEOUT_MS,
        timeoutMs: WHEP_TIMEOUT_MS,
      }));
    } catch {
      throw new ApiError('Cannot reach the media server.');
    }
    if (!res.ok) throw await errorFrom(res);
    const answer = await res.text();
    if (pc !== state.pc) {
      if (viewerUrl) fetch(viewerUrl, { method: 'DELETE' }).catch(() => {});
      return;
    }
    state.viewerUrl = viewerUrl;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  } catch (err) {
    if (pc !== state.pc || state.ended) return;
    if (err.status === 404 || err.status === 410) {
      // The session no longer exists on the server.
      endSession('no longer available');
      return;
    }
    console.warn('WHEP negotiation failed', err);
    log('media error', err.message, 'error');
    scheduleMediaRetry(err.retryAfter != null ? err.retryAfter * 1000 : undefined);
  }
}

function onPeerState(pc) {
  if (pc !== state.pc || state.ended) return;
  const s = pc.connectionState;
  clearTimeout(state.disconnectTimer);
  switch (s) {
    case 'connected':
      state.mediaRetries = 0;
      state.everLive = true;
      setBadge('live');
      setVeil(null);
      log('stream', 'live', 'ok');
      refreshViewers();
      break;
    case 'connecting':
    case 'new':
      setBadge(state.everLive ? 'reconnecting' : 'connecting');
      break;
    case 'disconnected':
      setBadge('reconnecting');
      log('stream', 'interrupted', 'local');
      state.disconnectTimer = setTimeout(() => {
        if (pc === state.pc && pc.connectionState !== 'connected') scheduleMediaRetry(0);
      }, DISCONNECT_GRACE_MS);
      break;
    case 'failed':
      log('stream', 'failed', 'error');
      scheduleMediaRetry();
      break;
    // 'closed' only happens when we close it ourselves.
  }
}

function scheduleMediaRetry(delayMs) {
  if (state.ended || state.mediaTimer) return;
  if (state.mediaRetries >= MEDIA_MAX_RETRIES) {
    closePeer({ notifyServer: true });
    fail('Lost connection to the avatar.', {
      label: 'Reconnect',
      onClick: () => { state.mediaRetries = 0; setBadge('reconnecting'); setVeil('Reconnecting…'); connectMedia(); },
    });
    return;
  }
  const delay = delayMs ?? backoff(state.mediaRetries);
  state.mediaRetries++;
  setBadge(state.everLive ? 'reconnecting' : 'connecting');
  setVeil(state.everLive ? 'Reconnecting…' : 'Connecting to avatar…');
  state.mediaTimer = setTimeout(() => {
    state.mediaTimer = 0;
    connectMedia();
  }, delay);
}

/** Close the current peer; optionally tell the WHEP server we left. */
function closePeer({ notifyServer }) {
  const pc = state.pc;
  const viewerUrl = state.viewerUrl;
  state.pc = null;
  state.viewerUrl = null;
  if (pc) pc.close();
  if (notifyServer && viewerUrl) {
    fetch(viewerUrl, { method: 'DELETE', keepalive: true }).catch(() => {});
  }
  resetStats();
}

// ---------------------------------------------------------------------------
// Stats overlay
// ---------------------------------------------------------------------------

let prevSample = null; // {t, bytes, frames} from the previous poll

function resetStats() {
  prevSample = null;
  el.fps.textContent = el.kbps.textContent = el.rtt.textContent = '–';
}

async function pollStats() {
  const pc = state.pc;
  if (!pc || pc.connectionState === 'closed') return;
  let report;
  try {
    report = await pc.getStats();
  } catch {
    return;
  }
  if (pc !== state.pc) return;

  let video = null;
  let pair = null;
  let selectedPairId = null;
  report.forEach((s) => {
    // `mediaType` is the pre-2020 spelling some browsers still emit.
    if (s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === 'video') video = s;
    else if (s.type === 'transport' && s.selectedCandidatePairId) selectedPairId = s.selectedCandidatePairId;
  });
  // Prefer the transport's selected pair (Chrome); Firefox flags it `selected`.
  if (selectedPairId) pair = report.get(selectedPairId) ?? null;
  if (!pair) {
    report.forEach((s) => {
      if (s.type === 'candidate-pair' && s.state === 'succeeded' && (s.selected || s.nominated || !pair)) pair = s;
    });
  }

  if (video) {
    const now = video.timestamp ?? performance.now();
    const sample = { t: now, bytes: video.bytesReceived ?? 0, frames: video.framesDecoded ?? 0 };
    let fps = video.framesPerSecond;
    if (prevSample && now > prevSample.t) {
      const dt = (now - prevSample.t) / 1000;
      if (fps == null) fps = (sample.frames - prevSample.frames) / dt;
      const kbps = ((sample.bytes - prevSample.bytes) * 8) / dt / 1000;
      el.kbps.textContent = Math.max(0, Math.round(kbps)).toString();
    }
    if (fps != null) el.fps.textContent = Math.round(fps).toString();
    prevSample = sample;
  }
  if (pair && typeof pair.currentRoundTripTime === 'number') {
    el.rtt.textContent = Math.round(pair.currentRoundTripTime * 1000).toString();
  }
}

setInterval(pollStats, 1000);

// ---------------------------------------------------------------------------
// Events WebSocket
// ---------------------------------------------------------------------------

function openEvents() {
  const session = state.session;
  if (!session || state.ended) return;
  const url = new URL(session.events_url, location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';

  const ws = new WebSocket(url.href);
  state.ws = ws;
  ws.onopen = () => { state.eventsRetries = 0; };
  ws.onmessage = (msg) => {
    let ev;
    try {
      ev = JSON.parse(msg.data);
    } catch {
      return; // not ours to interpret
    }
    if (ws !== state.ws) return;
    handleEvent(ev);
  };
  ws.onclose = () => {
    if (ws !== state.ws || state.ended) return;
    state.ws = null;
    // Events are nice-to-have; media keeps working without them, so retry
    // quietly a few times and then just say so.
    if (state.eventsRetries >= EVENTS_MAX_RETRIES) {
      log('events', 'disconnected', 'error');
      return;
    }
    state.eventsTimer = setTimeout(openEvents, backoff(state.eventsRetries++));
  };
}

/** Close the socket on purpose, without triggering the reconnect in onclose. */
function closeEvents() {
  const ws = state.ws;
  state.ws = null;
  if (ws) {
    ws.onclose = null;
    ws.close();
  }
}

function handleEvent(ev) {
  receivedEvents.push(ev);
  switch (ev.type) {
    case 'speech_started':
      setSpeaking(true);
      log('speech started', ev.text ?? '');
      break;
    case 'speech_ended':
      setSpeaking(false);
      log(ev.interrupted ? 'interrupted' : 'speech ended', ev.text ?? '');
      break;
    case 'viewer_joined':
      log('viewer joined', ev.viewer ?? '');
      refreshViewers();
      break;
    case 'viewer_left':
      log('viewer left', ev.viewer ?? '');
      refreshViewers();
      break;
    case 'error':
      log('error', ev.message ?? '', 'error');
      toast(ev.message || 'The server reported an error.');
      break;
    case 'reply_delta':
      // The answer streams in a few characters at a time: log it whole, once done.
      state.reply = (state.reply ?? '') + (ev.text ?? '');
      break;
    case 'reply_done':
      log('answer', ev.text ?? state.reply ?? '');
      state.reply = '';
      break;
    case 'session_ended':
      log('session ended', ev.reason ?? '');
      stopMic();
      endSession(ev.reason);
      break;
    case 'user_speech_started':
      log('you', 'speaking…', 'local');
      break;
    case 'user_speech_ended':
      log('you', `spoke ${((ev.duration_ms ?? 0) / 1000).toFixed(1)} s`, 'local');
      break;
    case 'transcript':
      el.transcript.textContent = ev.text ?? '';
      el.transcript.classList.toggle('partial', !ev.final);
      if (ev.final) log('heard', ev.text ?? '');
      break;
    case 'barge_in':
      log('interrupted by you', `${ev.after_ms ?? '?'} ms`, 'local');
      break;
    case 'publisher_joined':
    case 'publisher_left':
      break;
    default:
      log(String(ev.type ?? 'event'), JSON.stringify(ev));
  }
}

let viewersInFlight = false;
async function refreshViewers() {
  const session = state.session;
  if (!session || viewersInFlight) return;
  viewersInFlight = true;
  try {
    const info = await api('GET', `${API}/${encodeURIComponent(session.id)}`);
    if (session === state.session && typeof info?.viewers === 'number') {
      el.viewers.textContent = `${info.viewers} viewer${info.viewers === 1 ? '' : 's'}`;
    }
  } catch {
    // Cosmetic only.
  } finally {
    viewersInFlight = false;
  }
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

function requireSession() {
  if (!state.session || state.ended) throw new ApiError('No active session.');
  return state.session;
}

async function say(text, emotion, intensity) {
  const session = requireSession();
  const body = { text };
  if (emotion != null) body.emotion = emotion;
  if (intensity != null) body.intensity = intensity;
  return api('POST', `${API}/${encodeURIComponent(session.id)}/say`, body);
}

/** Asks the server's language model; the answer arrives as speech and reply events. */
async function chat(text) {
  const session = requireSession();
  return api('POST', `${API}/${encodeURIComponent(session.id)}/chat`, { text });
}

async function interrupt() {
  const session = requireSession();
  const res = await api('POST', `${API}/${encodeURIComponent(session.id)}/interrupt`);
  // Don't wait for speech_ended: the indicator should react to the click.
  setSpeaking(false);
  return res;
}

const selectedEmotion = () =>
  document.querySelector('input[name="emotion"]:checked')?.value ?? 'neutral';

async function submitSay() {
  const text = el.text.value.trim();
  if (!text || el.speak.getAttribute('aria-busy') === 'true') return;
  // Speaking is a clear request to hear the avatar, and this submit is a user
  // gesture, so it is also allowed to unmute.
  if (!state.soundEnabled && el.video.srcObject) enableSound();
  el.speak.setAttribute('aria-busy', 'true');
  try {
    if (el.askToggle.checked) {
      await chat(text);
      el.text.value = '';
      log('asked', text, 'local');
      state.reply = '';
    } else {
      const res = await say(text, selectedEmotion(), Number(el.intensity.value));
      el.text.value = '';
      log('queued', res?.queued != null ? `${res.queued} in queue` : text, 'local');
    }
  } catch (err) {
    toast(err.message);
  } finally {
    el.speak.removeAttribute('aria-busy');
    el.text.focus();
  }
}

async function submitInterrupt() {
  if (el.interrupt.disabled) return;
  try {
    await interrupt();
    log('interrupt', '', 'local');
  } catch (err) {
    toast(err.message);
  }
}

el.form.addEventListener('submit', (e) => {
  e.preventDefault();
  submitSay();
});

el.text.addEventListener('keydown', (e) => {
  // isComposing: Enter that confirms an IME candidate must not submit.
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    submitSay();
  }
});

el.interrupt.addEventListener('click', submitInterrupt);

document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && !e.defaultPrevented && state.session && !state.ended) {
    submitInterrupt();
  }
});

function syncIntensity() {
  const v = Number(el.intensity.value);
  el.intensityValue.textContent = v.toFixed(2);
  // Drives the filled part of the WebKit slider track (see style.css).
  el.intensity.style.setProperty('--fill', `${v * 100}%`);
}
el.intensity.addEventListener('input', syncIntensity);
syncIntensity();

// ---------------------------------------------------------------------------
// Page lifecycle
// ---------------------------------------------------------------------------

let leaving = false;
function leave() {
  if (leaving) return;
  leaving = true;
  const id = state.session?.id;
  state.ended = true;
  state.epoch++;
  clearTimers();
  closePeer({ notifyServer: false }); // deleting the session drops its viewers too
  closeEvents();
  if (id) deleteSession(id);
}
window.addEventListener('pagehide', leave);
window.addEventListener('beforeunload', leave);
// Restored from the back/forward cache: the session was deleted on the way
// out, so start fresh rather than show a dead stream.
window.addEventListener('pageshow', (e) => {
  if (e.persisted) location.reload();
});

el.video.addEventListener('volumechange', updateSoundUi);

// ---------------------------------------------------------------------------
// Test hook
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Avatar choice: the built-in face or a registered photo/video (?avatar=NAME)
// ---------------------------------------------------------------------------

state.avatar = new URLSearchParams(location.search).get('avatar') || 'default';

async function loadAvatars() {
  let avatars = [];
  try {
    const res = await fetch('/api/v1/avatars');
    if (res.ok) avatars = await res.json();
  } catch {
    // No list (older server, network hiccup): the built-in face still works.
  }
  for (const a of avatars) {
    const option = document.createElement('option');
    option.value = a.name;
    option.textContent = `${a.name} (${a.kind === 'video' ? 'video' : 'photo'})`;
    el.avatarSelect.append(option);
  }
  if (![...el.avatarSelect.options].some((o) => o.value === state.avatar)) {
    const option = document.createElement('option');
    option.value = state.avatar;
    option.textContent = state.avatar;
    el.avatarSelect.append(option);
  }
  el.avatarSelect.value = state.avatar;
}

el.avatarSelect.addEventListener('change', () => {
  state.avatar = el.avatarSelect.value;
  const url = new URL(location.href);
  if (state.avatar === 'default') url.searchParams.delete('avatar');
  else url.searchParams.set('avatar', state.avatar);
  history.replaceState(null, '', url);
  // A session shows one avatar: end this one and start another.
  const id = state.session?.id;
  if (id) deleteSession(id);
  start();
});

loadAvatars();

window.facecast = {
  get pc() { return state.pc; },
  get sessionId() { return state.session?.id ?? null; },
  get connectionState() { return el.badge.dataset.state; },
  say,
  chat,
  interrupt,
  events: receivedEvents,
};

start();

// ---------------------------------------------------------------------------
// Microphone: the user's voice to the session over WHIP
// ---------------------------------------------------------------------------

const mic = { pc: null, stream: null, url: null, starting: false };

function setMicUi() {
  const on = Boolean(mic.pc);
  el.mic.setAttribute('aria-pressed', String(on && (!el.ptt.checked || mic.held)));
  el.mic.textContent = on ? (el.ptt.checked ? 'Hold to talk' : 'Stop talking') : 'Talk';
}

/// Publishes the microphone (echo cancellation on, so the avatar's own voice from the
/// speakers is not heard as the user's).
async function startMic() {
  const session = state.session;
  if (!session || mic.pc || mic.starting) return;
  mic.starting = true;
  try {
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (err) {
      throw new ApiError(`The microphone is not available: ${err.message}`);
    }
    const pc = new RTCPeerConnection({ iceServers: [] });
    const [track] = stream.getAudioTracks();
    track.enabled = !el.ptt.checked;
    pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
    const { res, resource } = await sendOffer(pc, session.whip_url ?? `/whip/${session.id}`, {
      gatherMs: ICE_GATHER_TIMEOUT_MS,
      timeoutMs: WHEP_TIMEOUT_MS,
    });
    if (!res.ok) {
      pc.close();
      stream.getTracks().forEach((t) => t.stop());
      throw await errorFrom(res);
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    Object.assign(mic, { pc, stream, url: resource });
    log('microphone', el.ptt.checked ? 'hold the button to talk' : 'listening', 'ok');
  } catch (err) {
    toast(err.message || 'Cannot start the microphone.');
  } finally {
    mic.starting = false;
    setMicUi();
  }
}

function stopMic() {
  if (!mic.pc) return;
  if (mic.url) fetch(mic.url, { method: 'DELETE' }).catch(() => {});
  mic.pc.close();
  mic.stream?.getTracks().forEach((t) => t.stop());
  Object.assign(mic, { pc: null, stream: null, url: null, held: false });
  setMicUi();
}

function holdMic(held) {
  if (!mic.pc || !el.ptt.checked) return;
  mic.held = held;
  mic.stream?.getAudioTracks().forEach((t) => { t.enabled = held; });
  setMicUi();
}

el.mic.addEventListener('click', () => {
  if (el.ptt.checked && mic.pc) return; // push-to-talk: the button is held, not clicked
  if (mic.pc) stopMic(); else startMic();
});
el.mic.addEventListener('pointerdown', () => {
  if (!el.ptt.checked) return;
  if (!mic.pc) { startMic().then(() => holdMic(true)); return; }
  holdMic(true);
});
for (const ev of ['pointerup', 'pointerleave', 'pointercancel']) {
  el.mic.addEventListener(ev, () => holdMic(false));
}
el.ptt.addEventListener('change', () => {
  mic.stream?.getAudioTracks().forEach((t) => { t.enabled = !el.ptt.checked; });
  setMicUi();
});
window.addEventListener('pagehide', stopMic);

// `?talk=1`: start listening as soon as the stream is live (kiosks, hands-free set-ups).
if (new URLSearchParams(location.search).get('talk') === '1') {
  const waitLive = setInterval(() => {
    if (state.everLive && state.session && !mic.pc && !mic.starting) {
      clearInterval(waitLive);
      startMic();
    }
  }, 200);
}

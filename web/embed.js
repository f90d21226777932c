// The embeddable player: plays one session's stream over WHEP, nothing else.
//
// /embed/{session}?background=%2300ff00   (also /?embed=1&session={session})
//
// It starts with sound where the browser allows it (OBS Browser Source does; a page embedding
// it in an <iframe> needs allow="autoplay"), muted otherwise; a click anywhere unmutes. It
// reconnects after a network failure and stops when the session has ended. It tells the
// embedding page how it is doing: window.parent receives
// {source: 'facecast', state: 'connecting' | 'playing' | 'ended', framesDecoded, width, height,
// muted, controls} messages (controls: the number of visible controls, always 0).

import { sendOffer } from './signalling.js';

const ICE_GATHER_TIMEOUT_MS = 2000;
const WHEP_TIMEOUT_MS = 15000;
const RETRY_MS = [1000, 2000, 5000, 10000];

const params = new URLSearchParams(location.search);
const sessionId = location.pathname.startsWith('/embed/')
  ? decodeURIComponent(location.pathname.slice('/embed/'.length))
  : params.get('session');
const video = document.getElementById('video');
let state = 'connecting';
let pc = null;
let viewerUrl = null;
let attempts = 0;

const background = params.get('background');
if (background) {
  const colour = /^[0-9a-fA-F]{3,8}$/.test(background) ? `#${background}` : background;
  if (CSS.supports('background-color', colour)) document.body.style.background = colour;
}

function visibleControls() {
  const interactive = document.querySelectorAll('button, input, select, textarea, a[href]');
  return [...interactive].filter((e) => e.offsetParent !== null).length + (video.controls ? 1 : 0);
}

function report() {
  const quality = video.getVideoPlaybackQuality?.();
  const message = {
    source: 'facecast',
    session: sessionId,
    state,
    framesDecoded: quality ? quality.totalVideoFrames : 0,
    width: video.videoWidth,
    height: video.videoHeight,
    muted: video.muted,
    controls: visibleControls(),
    background: getComputedStyle(document.body).backgroundColor,
  };
  if (window.parent !== window) window.parent.postMessage(message, '*');
}

function setState(next) {
  state = next;
  report();
}

async function play() {
  try {
    video.muted = false;
    await video.play();
  } catch {
    // No autoplay with sound here: play muted until the viewer clicks.
    video.muted = true;
    await video.play().catch(() => {});
  }
}

document.addEventListener('click', () => {
  if (video.muted) {
    video.muted = false;
    video.play().catch(() => {});
  }
});

function retry() {
  const delay = RETRY_MS[Math.min(attempts, RETRY_MS.length - 1)];
  attempts += 1;
  setTimeout(connect, delay);
}

function close() {
  if (viewerUrl) fetch(viewerUrl, { method: 'DELETE', keepalive: true }).catch(() => {});
  viewerUrl = null;
  pc?.close();
  pc = null;
}

async function connect() {
  if (state === 'ended') return;
  close();
  setState('connecting');
  const peer = new RTCPeerConnection({ iceServers: [] });
  pc = peer;
  const stream = new MediaStream();
  peer.addEventListener('track', (ev) => {
    stream.addTrack(ev.track);
    if (video.srcObject !== stream) video.srcObject = stream;
    play();
  });
  peer.addEventListener('connectionstatechange', () => {
    if (peer !== pc) return;
    if (peer.connectionState === 'connected') {
      attempts = 0;
      setState('playing');
    } else if (peer.connectionState === 'failed') {
      retry();
    }
  });
  peer.addTransceiver('video', { direction: 'recvonly' });
  peer.addTransceiver('audio', { direction: 'recvonly' });
  try {
    const { res, resource } = await sendOffer(peer, `/whep/${encodeURIComponent(sessionId)}`, {
      gatherMs: ICE_GATHER_TIMEOUT_MS,
      timeoutMs: WHEP_TIMEOUT_MS,
    });
    if (res.status === 404 || res.status === 410) {
      // The session is over (or never was): show nothing more.
      close();
      setState('ended');
      return;
    }
    if (!res.ok) throw new Error(`WHEP answered ${res.status}`);
    viewerUrl = resource;
    await peer.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  } catch (err) {
    console.warn('facecast embed:', err);
    if (peer === pc) retry();
  }
}

window.addEventListener('pagehide', close);
setInterval(report, 1000);
if (sessionId) {
  connect();
} else {
  setState('ended');
}

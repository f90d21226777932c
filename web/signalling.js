// WHEP/WHIP signalling shared by the client (app.js) and the embeddable player (embed.js):
// one offer that already carries every ICE candidate (no trickle), POSTed to the endpoint.

/** Resolves once ICE gathering is complete, or after `ms` (what was gathered is sent). */
export function waitForIceGathering(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onChange);
      resolve();
    };
    const onChange = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', onChange);
  });
}

/**
 * Creates `pc`'s offer, gathers its candidates and POSTs it to `endpoint` (a WHEP or WHIP
 * URL). Returns the response (the caller reads the answer or the error) and the resource
 * URL from `Location`, resolved against the endpoint (it may be relative, RFC 9110).
 * A network failure rejects with the fetch error.
 */
export async function sendOffer(pc, endpoint, { gatherMs, timeoutMs }) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIceGathering(pc, gatherMs);
  const url = new URL(endpoint, location.href);
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Accept: 'application/sdp' },
    body: pc.localDescription.sdp,
    // A hung offer would otherwise leave the caller "connecting" forever.
    signal: AbortSignal.timeout(timeoutMs),
  });
  const loc = res.headers.get('Location');
  return { res, resource: loc ? new URL(loc, url).href : null };
}

// WebRTC for the agent Worker. RTCPeerConnection is a page API (workers do
// not have it), so the page holds the peer connections and the agent drives
// them: the agent posts `{type: 'rtc', op, peer, ...}` (open, offer, answer,
// candidate, close) and hears back `{cmd: 'rtc', op, peer, ...}` (offer,
// answer, candidate, closed) or `{cmd: 'rtc', peer, channel}`. Signals travel between
// agents through their coordinator sessions; this file never talks to the
// network itself.
//
// Each connection carries one data channel. It goes to the agent whole where
// the browser can transfer an RTCDataChannel; elsewhere the page relays it
// over a MessagePort: binary messages both ways, `'open'` once, and a number,
// the bytes the channel has sent so far, as its buffer drains (the agent's
// flow control).

import { RTC } from './messages.js';

const LOW_WATER = 64 * 1024;
// Connections at once; the agent keeps fewer, this only bounds a runaway.
const MAX_PEERS = 32;

/** Handles the agent's `rtc` messages; returns `{ onMessage(msg), close() }`. */
export function peerHost(agent) {
  const peers = new Map();
  const tell = (peer, fields, transfer) => agent.postMessage({ cmd: RTC, peer, ...fields }, transfer || []);

  // Ends a connection (only if it is still `owner`, when given: events of a
  // replaced one are late); `why` (a reason) tells the agent, which did not ask for it.
  const end = (peer, why, owner) => {
    const p = peers.get(peer);
    if (!p || (owner && p !== owner)) return;
    peers.delete(peer);
    if (p.port) p.port.close();
    p.pc.close();
    if (why) tell(peer, { op: 'closed', why });
  };

  // Gives the data channel to the agent: moved whole, or relayed.
  const hand = (peer, p, dc) => {
    p.handed = true;
    try {
      tell(peer, { channel: dc }, [dc]);
      return;
    } catch {
      // Not transferable in this browser (DataCloneError): relay it.
    }
    const { port1, port2 } = new MessageChannel();
    p.port = port1;
    dc.binaryType = 'arraybuffer';
    dc.bufferedAmountLowThreshold = LOW_WATER;
    let given = 0;
    const drained = () => port1.postMessage(given - dc.bufferedAmount);
    dc.onopen = () => port1.postMessage('open');
    dc.onmessage = (e) => {
      if (e.data instanceof ArrayBuffer) port1.postMessage(e.data, [e.data]);
    };
    dc.onbufferedamountlow = drained;
    dc.onclose = () => end(peer, 'the data channel closed', p);
    port1.onmessage = (e) => {
      if (!(e.data instanceof ArrayBuffer)) return;
      try {
        dc.send(e.data);
      } catch (err) {
        return end(peer, `sending on the data channel failed: ${err && err.message}`, p);
      }
      given += e.data.byteLength;
      if (dc.bufferedAmount <= LOW_WATER) drained();
    };
    tell(peer, { channel: port2 }, [port2]);
  };

  const open = (peer, ice, initiator) => {
    end(peer);
    if (typeof RTCPeerConnection !== 'function') throw new Error('this browser has no RTCPeerConnection');
    if (peers.size >= MAX_PEERS) throw new Error(`more than ${MAX_PEERS} peer connections`);
    const pc = new RTCPeerConnection({ iceServers: ice });
    const p = { pc, port: null };
    peers.set(peer, p);
    let gathered = 0;
    pc.onicecandidate = (e) => {
      const c = e.candidate;
      if (peers.get(peer) !== p) return;
      if (c && c.candidate) {
        gathered += 1;
        tell(peer, { op: 'candidate', candidate: c.candidate, mid: c.sdpMid || '', mline: c.sdpMLineIndex || 0 });
      } else if (!c && gathered === 0) {
        // Gathering is over and found no way out: give up now, not at the agent's timeout.
        end(peer, 'no ICE candidates', p);
      }
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed' || pc.connectionState === 'closed') end(peer, `peer connection ${pc.connectionState}`, p);
    };
    // One channel per connection: any further one the remote side opens is closed.
    pc.ondatachannel = (e) => {
      if (p.handed || peers.get(peer) !== p) e.channel.close();
      else hand(peer, p, e.channel);
    };
    if (initiator) {
      hand(peer, p, pc.createDataChannel('idlecore-blob'));
      return pc.createOffer().then(async (offer) => {
        await pc.setLocalDescription(offer);
        if (peers.get(peer) === p) tell(peer, { op: 'offer', sdp: pc.localDescription.sdp });
      });
    }
    return null;
  };

  // One agent message; a failure ends that connection and tells the agent why.
  // (A connection's operations run in order: a candidate waits for the offer.)
  const onMessage = async (msg) => {
    const { peer } = msg;
    const owner = msg.op === 'open' ? null : peers.get(peer);
    let opened = null;
    try {
      if (msg.op === 'open') {
        const made = open(peer, msg.ice || [], msg.initiator);
        opened = peers.get(peer);
        return await made;
      }
      if (msg.op === 'close') return end(peer);
      if (!owner) return undefined;
      const { pc } = owner;
      if (msg.op === 'offer') {
        await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
        await pc.setLocalDescription(await pc.createAnswer());
        if (peers.get(peer) === owner) tell(peer, { op: 'answer', sdp: pc.localDescription.sdp });
      } else if (msg.op === 'answer') {
        await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      } else if (msg.op === 'candidate') {
        await pc.addIceCandidate({ candidate: msg.candidate, sdpMid: msg.mid, sdpMLineIndex: msg.mline });
      }
    } catch (e) {
      const why = String(e && e.message ? e.message : e);
      if (owner) end(peer, why, owner);
      else if (peers.has(peer)) end(peer, why, opened);
      else tell(peer, { op: 'closed', why });
    }
    return undefined;
  };

  return {
    onMessage,
    close: () => [...peers.keys()].forEach((peer) => end(peer)),
  };
}

// A data channel as the agent sees it: an RTCDataChannel the page moved here,
// or the page's relay of one over a MessagePort (see pkg-config/peers.js:
// binary messages both ways, 'open' once, and a number, the bytes the
// channel has sent so far). Either way: `send`, `buffered` for flow control,
// and callbacks for open, data (Uint8Array), drain and (for a moved channel;
// the page reports a relayed one's end) close.

const LOW_WATER = 64 * 1024;

export class PeerLink {
  constructor(end, onOpen, onData, onDrain, onClose) {
    this.end = end;
    this.relayed = typeof MessagePort === 'function' && end instanceof MessagePort;
    this.posted = 0;
    this.drained = 0;
    // Set by close(): the callbacks belong to the agent and may be gone.
    this.closed = false;
    let opened = false;
    const open = () => {
      if (!opened && !this.closed) {
        opened = true;
        onOpen();
      }
    };
    const data = (d) => {
      if (d instanceof ArrayBuffer) onData(new Uint8Array(d));
    };
    if (this.relayed) {
      end.onmessage = (e) => {
        if (e.data === 'open') open();
        else if (typeof e.data === 'number') {
          this.drained = e.data;
          onDrain();
        } else data(e.data);
      };
    } else {
      end.binaryType = 'arraybuffer';
      end.bufferedAmountLowThreshold = LOW_WATER;
      end.onopen = open;
      end.onmessage = (e) => data(e.data);
      end.onbufferedamountlow = () => onDrain();
      end.onclose = () => onClose();
      // A channel the remote side made may be open already when it arrives.
      if (end.readyState === 'open') queueMicrotask(open);
    }
  }

  send(bytes) {
    if (this.relayed) {
      const buffer = bytes.slice().buffer;
      this.posted += buffer.byteLength;
      this.end.postMessage(buffer, [buffer]);
    } else {
      this.end.send(bytes);
    }
  }

  /** Bytes handed to the channel and not yet sent. */
  buffered() {
    return this.relayed ? this.posted - this.drained : this.end.bufferedAmount;
  }

  close() {
    this.closed = true;
    this.end.onmessage = null;
    if (!this.relayed) {
      this.end.onopen = null;
      this.end.onbufferedamountlow = null;
      this.end.onclose = null;
    }
    this.end.close();
  }
}

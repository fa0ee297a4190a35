// Shared by the WebRTC tests.

// A browser that cannot move an RTCDataChannel to a Worker: the page relays it.
export const NO_CHANNEL_TRANSFER = `{
  const post = Worker.prototype.postMessage;
  Worker.prototype.postMessage = function (msg, transfer) {
    if (Array.isArray(transfer) && transfer.some((t) => t instanceof RTCDataChannel)) {
      throw new DOMException('RTCDataChannel is not transferable here', 'DataCloneError');
    }
    return post.apply(this, arguments);
  };
}`;

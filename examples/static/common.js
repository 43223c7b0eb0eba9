// What the example pages' scripts share, as the global `demo`. demo_support.py
// serves it at /static/common.js; each page loads it after the socket.io client
// and before its own script.
var demo = (function () {
  'use strict';

  function byId(id) {
    return document.getElementById(id);
  }

  // A new element. Text goes in with textContent, never innerHTML, so what
  // other people send cannot become markup.
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The header's status pill (#status): its text, and the state that colours
  // its dot (common.css).
  function setStatus(state, text) {
    var pill = byId('status');
    pill.dataset.state = state;
    pill.textContent = text;
  }

  // socket.io-client 0.6 builds the jsonp-polling POST form once, so after a
  // reconnect it would keep posting to the dead session: aim it at the new one.
  // Call it on every 'connect' of `socket`.
  function retargetJsonpForm(socket) {
    var t = socket.transport;
    if (t && t.type === 'jsonp-polling' && t.form) {
      t.form.action = t.prepareUrl() + '/' + (+new Date()) + '/' + t.index;
    }
  }

  return {byId: byId, el: el, setStatus: setStatus, retargetJsonpForm: retargetJsonpForm};
})();

/*
 * Browser side of the TornadIO conformance tests.
 *
 * Loaded by the test page *before* socket.io.js, so that the htmlfile shim
 * (page query ?shim=htmlfile, see docs/protocol.rst §5) is in place when the
 * client probes for ActiveX. Everything else runs later, from T.connect().
 *
 * window.T records every client event with a timestamp; the Python tests read
 * it through page.evaluate / page.wait_for_function.
 */
(function () {
  'use strict';

  var config = window.TEST_CONFIG || {};

  // -- htmlfile shim ----------------------------------------------------------
  // The client's htmlfile transport wants IE's ActiveXObject('htmlfile'): an
  // off-screen document in which it builds an <iframe> whose scripts call
  // parent.s._(data, document). With parentWindow = window and body = a hidden
  // div of this page, the iframe lives in the page and the calls reach the
  // real client code unchanged.
  function installHtmlfileShim() {
    function hiddenContainer() {
      var div = document.createElement('div');
      div.className = 'htmlfile-doc';
      div.style.display = 'none';
      (document.body || document.documentElement).appendChild(div);
      return div;
    }

    window.ActiveXObject = function (name) {
      if (name !== 'htmlfile') {
        throw new Error('ActiveXObject(' + name + ') is not available in this shim');
      }
      var body = null;
      var doc = {
        open: function () {},
        write: function () {},
        close: function () {},
        parentWindow: window,
        createElement: function (tag) { return document.createElement(tag); }
      };
      // Created on first use: check() makes throw-away instances too.
      Object.defineProperty(doc, 'body', {
        get: function () { return body || (body = hiddenContainer()); }
      });
      return doc;
    };

    // IE event API on top of the standard one. "unload" becomes "pagehide":
    // same moment for this purpose, and Chromium is phasing out unload.
    var eventName = function (name) {
      var type = String(name).replace(/^on/, '');
      return type === 'unload' ? 'pagehide' : type;
    };
    window.attachEvent = function (name, fn) {
      window.addEventListener(eventName(name), fn, false);
      return true;
    };
    window.detachEvent = function (name, fn) {
      window.removeEventListener(eventName(name), fn, false);
    };
    window.CollectGarbage = function () {};
    window.HTMLFILE_SHIM = true;
  }

  if (config.shim === 'htmlfile') installHtmlfileShim();

  // -- the test driver --------------------------------------------------------
  var EVENTS = ['connecting', 'connect', 'message', 'disconnect', 'connect_failed',
                'reconnecting', 'reconnect', 'reconnect_failed', 'error'];

  function now() { return performance.now(); }

  function plain(value) {
    // Keep recorded values serialisable (error events carry DOM objects).
    if (value === null || value === undefined) return value === undefined ? null : value;
    var t = typeof value;
    if (t === 'string' || t === 'number' || t === 'boolean') return value;
    try {
      return JSON.parse(JSON.stringify(value));
    } catch (e) {
      return String(value);
    }
  }

  var T = window.T = {
    socket: null,
    events: [],     // {type, args, t}, every client event in order
    messages: [],   // data of each 'message' event, in order
    startedAt: null
  };

  T.reset = function () {
    T.events = [];
    T.messages = [];
  };

  // new io.Socket('127.0.0.1', {...}) with test-friendly defaults:
  // the page's port, exactly one transport, no remembered transport (no
  // cookie), no automatic reconnect (each test decides). options.transport
  // (a name) is shorthand for transports: [name].
  T.connect = function (options) {
    options = options || {};
    if (typeof io === 'undefined' || !io.Socket) throw new Error('socket.io.js is not loaded');
    if (T.socket) throw new Error('T.connect() called twice; reload the page instead');
    var host = options.host || '127.0.0.1';
    var opts = {
      port: Number(location.port) || 80,
      rememberTransport: false,
      reconnect: false
    };
    for (var key in options) {
      if (Object.prototype.hasOwnProperty.call(options, key) && key !== 'host' && key !== 'transport') {
        opts[key] = options[key];
      }
    }
    if (options.transport) opts.transports = [options.transport];
    var socket = new io.Socket(host, opts);
    T.socket = socket;
    if (!socket.transport) throw new Error('no usable transport among ' + JSON.stringify(opts.transports));
    EVENTS.forEach(function (type) {
      socket.on(type, function () {
        var args = Array.prototype.slice.call(arguments).map(plain);
        T.events.push({type: type, args: args, t: now()});
        if (type === 'message') T.messages.push(arguments[0]);
      });
    });
    T.startedAt = now();
    socket.connect();
    return socket.transport.type;
  };

  T.send = function (message) {
    T.socket.send(message);
  };

  // Send many messages back to back, in one turn of the event loop.
  T.sendAll = function (messages) {
    for (var i = 0; i < messages.length; i++) T.socket.send(messages[i]);
    return messages.length;
  };

  T.disconnect = function () {
    T.socket.disconnect();
  };

  // -- state accessors --------------------------------------------------------
  T.count = function (type) {
    var n = 0;
    for (var i = 0; i < T.events.length; i++) if (T.events[i].type === type) n++;
    return n;
  };

  T.eventTypes = function () {
    return T.events.map(function (e) { return e.type; });
  };

  T.firstTime = function (type) {
    for (var i = 0; i < T.events.length; i++) if (T.events[i].type === type) return T.events[i].t;
    return null;
  };

  T.connected = function () {
    return !!(T.socket && T.socket.connected);
  };

  T.state = function () {
    var s = T.socket;
    return {
      connected: !!(s && s.connected),
      connecting: !!(s && s.connecting),
      transport: s && s.transport ? s.transport.type : null,
      sessionid: s && s.transport ? (s.transport.sessionid || null) : null,
      events: T.eventTypes().filter(function (t) { return t !== 'message'; }),
      messageCount: T.messages.length,
      shim: !!window.HTMLFILE_SHIM
    };
  };
})();

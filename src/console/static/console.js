// deskprov console: the one enhancement. Elements with data-state-of="<mac>" show a device's
// live sync state; poll it every 2 s while the page is open. Everything works without this.
(function () {
  var els = document.querySelectorAll("[data-state-of]");
  if (!els.length) return;
  function poll() {
    els.forEach(function (el) {
      fetch("/ui/devices/" + encodeURIComponent(el.getAttribute("data-state-of")) + "/state", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (s) {
          if (!s || !s.state) return;
          el.textContent = s.label;
          el.className = "st " + s.state;
          el.setAttribute("data-state", s.state);
        })
        .catch(function () {});
    });
  }
  setInterval(poll, 2000);
})();

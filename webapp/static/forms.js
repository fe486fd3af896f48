// Fields marked data-show-when="other=value[|value...]" show only while the form's
// `other` field has one of those values (e.g. the setting of the chosen source).
// Hidden fields are still sent; the server's form keeps only the relevant ones.
(function () {
  function sync(root) {
    root.querySelectorAll("[data-show-when]").forEach(function (el) {
      var rule = el.dataset.showWhen.split("=");
      var control = el.form && el.form.elements[rule[0]];
      if (!control) return;
      var wrapper = el.closest("label.field") || el;
      wrapper.hidden = rule[1].split("|").indexOf(control.value) < 0;
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.form) sync(event.target.form);
  });
  document.addEventListener("DOMContentLoaded", function () { sync(document); });
  document.addEventListener("htmx:afterSettle", function (event) { sync(event.target); });
})();

// Reviewer shortcuts on the comparison page: j/k next/previous prompt, n next pair in the
// prompt, a/b/t vote A, B or tie on the current pair. Plain JS, no build step.
(function () {
  "use strict";
  const prompts = Array.from(document.querySelectorAll(".eval-prompt"));
  if (!prompts.length) return;
  let p = -1;
  let v = 0;

  function verdicts() {
    return p < 0 ? [] : Array.from(prompts[p].querySelectorAll(".verdict"));
  }

  function mark() {
    document.querySelectorAll(".focused, .verdict.current").forEach(function (el) {
      el.classList.remove("focused", "current");
    });
    if (p < 0) return;
    prompts[p].classList.add("focused");
    const list = verdicts();
    if (list[v]) list[v].classList.add("current");
  }

  function go(delta) {
    p = Math.max(0, Math.min(prompts.length - 1, p + delta));
    v = 0;
    mark();
    prompts[p].focus({ preventScroll: true });
    prompts[p].scrollIntoView({ block: "start", behavior: "smooth" });
  }

  function vote(value) {
    const target = verdicts()[v];
    if (!target) return;
    const button = target.querySelector('.vote-form button[value="' + value + '"]');
    if (button) button.click();
  }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select") return;
    const keys = {
      j: function () { go(1); },
      k: function () { go(-1); },
      n: function () {
        if (p < 0) return go(1); // nothing focused yet: start at the first prompt
        v = (v + 1) % Math.max(1, verdicts().length);
        mark();
      },
      a: function () { vote("a"); },
      b: function () { vote("b"); },
      t: function () { vote("tie"); },
    };
    if (keys[e.key]) {
      e.preventDefault();
      keys[e.key]();
    }
  });

  // htmx swaps the votes block after a vote; keep the highlight on the current pair.
  document.body.addEventListener("htmx:afterSwap", mark);
})();

// A playground run's answers as the serving process writes them (server-sent events from
// runs/<id>/stream/). The run page re-renders every 1.5 s from the database, which has
// the answers only once they are done, so the text read so far is kept here and painted
// back after each swap.
(function () {
  "use strict";
  const texts = {}; // stream URL -> text per answer
  const sources = {}; // stream URL -> its EventSource

  function paint() {
    document.querySelectorAll("[data-answers-stream]").forEach((box) => {
      const got = texts[box.dataset.answersStream] || [];
      box.querySelectorAll("[data-answer]").forEach((pre) => {
        const text = got[Number(pre.dataset.answer)];
        if (text && text.length >= pre.textContent.length - 1) pre.textContent = text + "▍";
      });
    });
  }

  function follow() {
    document.querySelectorAll("[data-answers-stream]").forEach((box) => {
      const url = box.dataset.answersStream;
      if (sources[url]) return;
      const source = (sources[url] = new EventSource(url));
      source.onopen = () => { texts[url] = []; }; // each connection reads from the start
      source.onmessage = (message) => {
        const event = JSON.parse(message.data);
        const got = texts[url] || (texts[url] = []);
        if (event.text) got[event.answer] = (got[event.answer] || "") + event.text;
        paint();
      };
      source.addEventListener("end", () => source.close());
    });
    paint();
  }

  document.addEventListener("DOMContentLoaded", follow);
  document.addEventListener("htmx:afterSwap", follow);
})();

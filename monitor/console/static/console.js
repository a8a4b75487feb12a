// The console's only script: keyboard navigation of lists, a print button, a busy note on uploads.
// Everything works without it; it adds no request of its own.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const rows = Array.from(document.querySelectorAll("tr[data-href]"));
  let current = -1;
  const select = (i) => {
    if (!rows.length) return;
    current = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach((r, k) => r.classList.toggle("selected", k === current));
    rows[current].focus({ preventScroll: false });
    rows[current].scrollIntoView({ block: "nearest" });
  };
  rows.forEach((row, i) => {
    row.addEventListener("click", (e) => {
      if (e.target.closest("a, button, input, select, textarea")) return;
      window.location.href = row.dataset.href;
    });
    row.addEventListener("focus", () => { current = i; rows.forEach((r, k) => r.classList.toggle("selected", k === i)); });
  });
  document.addEventListener("keydown", (e) => {
    if (!rows.length || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.target.closest("input, select, textarea")) return;
    if (e.key === "j") { select(current + 1); e.preventDefault(); }
    else if (e.key === "k") { select(current < 0 ? 0 : current - 1); e.preventDefault(); }
    else if (e.key === "Enter" && current >= 0) { window.location.href = rows[current].dataset.href; e.preventDefault(); }
  });

  document.querySelectorAll("[data-print]").forEach((b) => b.addEventListener("click", () => window.print()));

  const form = document.getElementById("try-form");
  if (form) form.addEventListener("submit", () => {
    const busy = form.querySelector(".busy");
    if (busy) busy.hidden = false;
  });
});

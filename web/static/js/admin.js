// Organisations and people: ask before destructive actions (forms carrying data-confirm).
// A static file because the Content-Security-Policy forbids inline scripts and on* handlers.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

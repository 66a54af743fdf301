// /docs: lend Swagger UI the key the console holds (this tab's session storage), so
// "Try it out" works once logged in there; the Authorize box works as usual otherwise.
// When the OpenAPI document itself needs a key (MAAS_AUTH__DOCS_PUBLIC=false), fetch it
// with that key.
(function () {
  const key = sessionStorage.getItem("maas.apiKey");
  if (!key || typeof ui === "undefined") return;
  ui.authActions.authorize({ bearer: { name: "bearer", schema: { type: "http", scheme: "bearer" }, value: key } });
  fetch("/openapi.json", { headers: { Authorization: `Bearer ${key}` } })
    .then((r) => (r.ok ? r.text() : null))
    .then((spec) => { if (spec && ui.specSelectors.loadingStatus() === "failed") ui.specActions.updateSpec(spec); })
    .catch(() => {});
})();

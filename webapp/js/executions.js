// Running a pipeline, watching an execution, its results, and the list of one's executions.

import { clear, download, field, formatTime, h } from "./dom.js";
import { loadModels, modelNamesList, templateVariables } from "./editor.js";
import { parameterFields } from "./params.js";
import { pagedList } from "./pipelines.js";

const FINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const STATUSES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];
const POLL_MS = 1000;

function statusBadge(status) {
  return h("span", { class: `status status-${String(status).toLowerCase()}` }, status);
}

function executionRow(execution) {
  const percent = execution.progress ? execution.progress.percent : 0;
  return h(
    "li",
    { class: "item" },
    h(
      "p",
      {},
      h("a", { href: `#/executions/${encodeURIComponent(execution.executionId)}` }, `Execution ${execution.executionId.slice(0, 8)}`),
      " ",
      statusBadge(execution.status),
      ` · ${percent || 0}% · ${formatTime(execution.createdAt)}`,
    ),
  );
}

export function executionRows(items) {
  return h("ul", { class: "items" }, items.map(executionRow));
}

export async function executionListView(app) {
  const filter = h(
    "select",
    { id: "status-filter" },
    h("option", { value: "" }, "Any status"),
    STATUSES.map((status) => h("option", { value: status }, status)),
  );
  const slot = h("div", {});
  async function show() {
    const list = pagedList(app, {
      path: "/executions",
      query: { status: filter.value },
      row: executionRow,
      label: "Executions",
      empty: filter.value ? `No ${filter.value} executions.` : "You have not run anything yet.",
    });
    await list.ready;
    clear(slot, list);
  }
  filter.addEventListener("change", show);
  await show();
  return h(
    "section",
    {},
    h("h1", {}, "My executions"),
    await usageSummary(app),
    h("div", { class: "filters" }, field("Status", filter)),
    slot,
  );
}

// Today's usage and limits, where the deployment has `GET /users/me/usage`.
async function usageSummary(app) {
  if (!app.features.has("/users/me/usage")) return null;
  const usage = await app.api.get("/users/me/usage").catch(() => null);
  if (!usage) return null;
  const limits = usage.limits || {};
  const quota = limits.dailyGpuSeconds ? ` of ${limits.dailyGpuSeconds}` : "";
  return h(
    "p",
    { class: "meta" },
    `Today (${usage.day}): ${usage.executions} executions, ${Number(usage.gpuSeconds).toFixed(1)}${quota} GPU-seconds; ` +
      `${usage.active} running or queued, ${usage.waiting} waiting (at most ${limits.maxActiveExecutions ?? "?"} at a time).`,
  );
}

// --- run --------------------------------------------------------------------------------------------------

async function backendChoice(app) {
  const select = h("select", { id: "run-backend", name: "backend" }, h("option", { value: "" }, "Default backend"));
  if (app.features.has("/backends")) {
    const backends = await app.api.get("/backends").catch(() => ({ items: [] }));
    for (const backend of backends.items || []) {
      const wait = backend.estimatedWaitSeconds;
      const label = `${backend.name} (${backend.queued ?? 0} queued${wait === null || wait === undefined ? "" : `, ~${wait} s wait`})`;
      select.append(h("option", { value: backend.name }, label));
    }
    return field("Backend", select);
  }
  const input = h("input", { type: "text", id: "run-backend", name: "backend", placeholder: "gpu-fleet" });
  return field("Backend (optional)", input, "Empty: the deployment's default backend.");
}

export async function runView(app, pipelineId) {
  const id = app.renderId;
  const [pipeline, stageTypes, models] = await Promise.all([
    app.api.get(`/pipelines/${encodeURIComponent(pipelineId)}`),
    app.stageTypes(),
    loadModels(app),
  ]);
  if (!app.isCurrent(id)) return null;
  const byType = Object.fromEntries(stageTypes.map((type) => [type.type, type]));
  const names = [...new Set(pipeline.stages.flatMap((stage) => (stage.inline ? templateVariables(stage.body) : [])))];
  const variableInputs = {};
  const variableFields = names
    .filter((name) => name !== "image")
    .map((name) => {
      variableInputs[name] = h("input", { type: "text", id: `var-${name}`, name, required: true });
      return field(`{{${name}}}`, variableInputs[name]);
    });
  const wantsImage = pipeline.stages.some((stage) => stage.type === "img2img");
  const imageInput = h("input", { type: "file", id: "var-image", accept: "image/png,image/jpeg,image/webp" });
  const imageField = wantsImage
    ? field("Input image (variables.image)", imageInput, "PNG, JPEG or WebP, up to 2048 pixels a side; uploaded first.")
    : null;
  const backend = await backendChoice(app);
  const webhook = h("input", { type: "url", id: "run-webhook", name: "webhook", placeholder: "https://example.com/hook" });
  const webhookField = app.features.has("webhooks")
    ? field("Webhook (optional)", webhook, "An https address told when the execution completes (signed; see your webhook secret).")
    : null;
  const overrides = pipeline.stages.map((stage, index) =>
    parameterFields(byType[stage.type], {}, {
      idPrefix: `override-${index}`,
      legend: `Stage ${index} (${stage.type}) overrides`,
      modelNames: models.map((model) => model.name),
    }),
  );
  const formError = h("div", { class: "form-error", role: "alert", tabindex: -1 });
  const submit = h("button", { type: "submit" }, "Run");

  function placeError(detail) {
    const loc = (detail.loc || []).filter((part) => part !== "body");
    const message = detail.message || detail.msg || "invalid";
    if (loc[0] === "parameters" && overrides[Number(loc[1])]) {
      const target = overrides[Number(loc[1])].fields[loc[2]];
      if (target) return target.showError(message);
    }
    if (loc[0] === "variables" && variableInputs[loc[1]]) return variableInputs[loc[1]].fieldWrapper.showError(message);
    if (loc[0] === "backend") return backend.showError(message);
    if (loc[0] === "webhook" && webhookField) return webhookField.showError(message);
    formError.append(h("p", {}, loc.length ? `${loc.join(".")}: ${message}` : message));
  }

  const form = h(
    "form",
    {
      class: "card",
      async onsubmit(event) {
        event.preventDefault();
        formError.replaceChildren();
        [...form.querySelectorAll(".field")].forEach((f) => f.showError && f.showError(""));
        submit.disabled = true;
        try {
          const body = { variables: {} };
          for (const [name, input] of Object.entries(variableInputs)) body.variables[name] = input.value;
          if (imageInput.files && imageInput.files[0]) {
            app.notify("Uploading the image…");
            body.variables.image = await app.api.upload(imageInput.files[0]);
          }
          const backendValue = form.querySelector("#run-backend").value.trim();
          if (backendValue) body.backend = backendValue;
          const parameters = {};
          overrides.forEach((override, index) => {
            const values = override.read();
            if (Object.keys(values).length) parameters[String(index)] = values;
          });
          if (Object.keys(parameters).length) body.parameters = parameters;
          if (webhook.value.trim()) body.webhook = webhook.value.trim();
          const execution = await app.api.post(`/pipelines/${encodeURIComponent(pipelineId)}/executions`, body);
          app.navigate(`#/executions/${encodeURIComponent(execution.executionId)}`);
        } catch (error) {
          (error.details || []).forEach(placeError);
          if (!error.details || !error.details.length) formError.append(h("p", {}, error.message));
          formError.focus();
        } finally {
          submit.disabled = false;
        }
      },
    },
    variableFields.length ? h("fieldset", {}, h("legend", {}, "Variables"), variableFields) : null,
    imageField,
    backend,
    webhookField,
    h("details", {}, h("summary", {}, "Parameter overrides"), overrides.map((override) => override.element)),
    formError,
    h("div", { class: "actions" }, submit),
  );
  return h(
    "section",
    {},
    h("h1", {}, `Run ${pipeline.name}`),
    modelNamesList(models),
    h("p", {}, h("a", { href: `#/pipelines/${encodeURIComponent(pipelineId)}` }, "Back to the pipeline")),
    form,
  );
}

// --- watch ------------------------------------------------------------------------------------------------

function progressText(execution) {
  const progress = execution.progress;
  if (!progress) return execution.status === "QUEUED" ? "Waiting in the queue." : "";
  const stages = Number(progress.stages ?? 0);
  if (execution.status === "SUCCEEDED") return `100%: all ${stages} stage${stages === 1 ? "" : "s"} done`;
  const index = Math.min(Number(progress.stage ?? 0), Math.max(stages - 1, 0)); // 0-based, as everywhere in the API
  const stage = `stage ${index} (${index + 1} of ${stages || "?"})`;
  const step = progress.steps ? `, step ${progress.step ?? 0} of ${progress.steps}` : "";
  return `${progress.percent ?? 0}%: ${stage}${step}`;
}

function outputView(output) {
  const title = `Stage ${output.stage}, output ${output.index}`;
  if (output.type === "image") {
    return h(
      "figure",
      { class: "output" },
      h("a", { href: output.url, target: "_blank", rel: "noopener" }, h("img", { src: output.url, alt: `${title}: generated image` })),
      h(
        "figcaption",
        {},
        title,
        " · ",
        h("a", { href: output.url, download: `stage${output.stage}-${output.index}.png`, rel: "noopener" }, "Download image"),
      ),
    );
  }
  return h(
    "figure",
    { class: "output" },
    h("pre", { class: "text-output" }, output.text || ""),
    h(
      "figcaption",
      {},
      title,
      " · ",
      h(
        "button",
        {
          type: "button",
          class: "link",
          onclick: () => download(`stage${output.stage}-${output.index}.txt`, new Blob([output.text || ""], { type: "text/plain" })),
        },
        "Download text",
      ),
    ),
  );
}

export async function executionView(app, executionId) {
  const id = app.renderId;
  const path = `/executions/${encodeURIComponent(executionId)}`;
  let execution = await app.api.get(path);
  if (!app.isCurrent(id)) return null;
  // The status line is announced when it changes; the progress (every second) is read on demand only.
  const status = h("p", { class: "execution-status", role: "status" });
  const bar = h("progress", { id: "execution-progress", max: 100, value: 0, "aria-label": "Progress" });
  const detail = h("p", { id: "progress-text" });
  const error = h("p", { class: "form-error", role: "alert" });
  const results = h("div", { class: "results", "aria-live": "polite" });
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  const remove = h("button", { type: "button", class: "danger" }, "Delete execution");
  let resultsShown = false;

  async function showResults() {
    resultsShown = true;
    const result = await app.api.get(`${path}/result`);
    clear(results, h("h2", {}, "Results"), result.outputs.map(outputView));
  }

  const usage = h("p", { class: "meta" });

  function paint() {
    usage.textContent = execution.usage ? `GPU time: ${Number(execution.usage.gpuSeconds).toFixed(2)} s` : "";
    const cancelling = execution.cancelRequested && !FINAL.has(execution.status);
    const shown = `${execution.status}${cancelling ? " (cancel requested)" : ""}`;
    if (status.dataset.shown !== shown) {
      status.dataset.shown = shown; // rewritten (and announced) only when it changes
      clear(status, "Status: ", statusBadge(execution.status), cancelling ? " (cancel requested)" : "");
    }
    const percent = execution.progress ? execution.progress.percent || 0 : 0;
    bar.value = percent;
    bar.setAttribute("aria-valuetext", `${percent}%`);
    detail.textContent = progressText(execution);
    error.textContent = execution.error ? `${execution.error.code}: ${execution.error.message}` : "";
    cancel.hidden = FINAL.has(execution.status);
    cancel.disabled = Boolean(execution.cancelRequested);
  }

  async function poll() {
    while (app.isCurrent(id) && !FINAL.has(execution.status)) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (!app.isCurrent(id)) return;
      try {
        execution = await app.api.get(path);
      } catch (failure) {
        if (!app.isCurrent(id)) return;
        if (failure.status === 404) return app.navigate("#/executions");
        continue; // a transient failure: try again on the next tick
      }
      if (app.isCurrent(id)) paint();
    }
    if (app.isCurrent(id) && execution.status === "SUCCEEDED" && !resultsShown) await showResults();
  }

  cancel.addEventListener("click", async () => {
    try {
      execution = await app.api.post(`${path}/cancel`);
      paint();
    } catch (failure) {
      app.showError(failure);
    }
  });
  remove.addEventListener("click", async () => {
    if (!window.confirm("Delete this execution and its results?")) return;
    try {
      await app.api.delete(path);
      app.notify("Execution deleted.", "#/executions");
      app.navigate("#/executions");
    } catch (failure) {
      app.showError(failure);
    }
  });

  paint();
  const view = h(
    "section",
    {},
    h("h1", {}, `Execution ${executionId.slice(0, 8)}`),
    h(
      "p",
      { class: "meta" },
      "Pipeline ",
      h("a", { href: `#/pipelines/${encodeURIComponent(execution.pipelineId)}` }, execution.pipelineId.slice(0, 8)),
      ` · backend ${execution.backend} · submitted ${formatTime(execution.createdAt)}`,
    ),
    status,
    bar,
    detail,
    usage,
    error,
    h("div", { class: "actions" }, cancel, remove),
    results,
  );
  poll().catch((failure) => app.isCurrent(id) && app.showError(failure));
  return view;
}

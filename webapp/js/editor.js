// The stage editor: a pipeline's name, description and 1-16 stages, each a type from `GET /stage-types`, a
// prompt (with {{previous}} and {{variables}}) and its parameters. The API's 422 details land at their field.

import { clear, download, field, h } from "./dom.js";
import { parameterFields } from "./params.js";

const MAX_STAGES = 16;
const TEMPLATE = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

export function templateVariables(text) {
  return [...String(text).matchAll(TEMPLATE)].map((match) => match[1]).filter((name) => name !== "previous");
}

export function modelNamesList(models) {
  return h("datalist", { id: "model-names" }, models.map((model) => h("option", { value: model.name })));
}

export async function loadModels(app) {
  if (!app.features.has("/models")) return [];
  return (await app.api.get("/models").catch(() => ({ items: [] }))).items || [];
}

export async function editorView(app) {
  const stageTypes = await app.stageTypes();
  const models = await loadModels(app);
  const byType = Object.fromEntries(stageTypes.map((type) => [type.type, type]));
  const name = h("input", { type: "text", id: "pipeline-name", required: true, maxlength: 100 });
  const description = h("textarea", { id: "pipeline-description", rows: 2, maxlength: 2000 });
  const topFields = { name: field("Name", name), description: field("Description (optional)", description) };
  const stagesList = h("ol", { class: "stages editor", start: 0, "aria-label": "Stages" });
  const formError = h("div", { class: "form-error", role: "alert" });
  const variablesHint = h("p", { class: "hint", "aria-live": "polite" });
  let stages = []; // [{ element, read(), fields, prompt }]

  function refreshVariables() {
    const names = new Set(stages.flatMap((stage) => templateVariables(stage.prompt.value)));
    variablesHint.textContent = names.size
      ? `Variables a run will ask for: ${[...names].join(", ")}.`
      : "Use {{previous}} for the previous stage's text and {{name}} for a variable given at run time.";
  }

  function renumber() {
    stages.forEach((stage, index) => stage.renumber(index));
    addButton.disabled = stages.length >= MAX_STAGES;
  }

  let stageKeys = 0; // ids stay unique while stages are added, moved and removed
  function addStage(initial = {}) {
    stageKeys += 1;
    const key = `stage${stageKeys}`;
    const stage = {};
    const typeSelect = h(
      "select",
      { id: `${key}-type`, name: "type" },
      stageTypes.map((type) => h("option", { value: type.type, selected: initial.type === type.type }, type.type)),
    );
    const prompt = h("textarea", { id: `${key}-prompt`, name: "prompt", rows: 3, maxlength: 16384 });
    prompt.value = initial.inline === false ? "" : initial.body || "";
    const typeField = field("Type", typeSelect);
    const typeHelp = h("p", { class: "hint" });
    // A prompt given by reference (an upload's s3:// URI) is kept unless a prompt is typed instead.
    const uploadedBody = initial.inline === false ? initial.body : null;
    const promptHint = uploadedBody
      ? `Now the prompt uploaded as ${uploadedBody}; typing one here replaces it.`
      : "Up to 16 KiB; {{previous}} is the previous stage's text output.";
    const promptField = field("Prompt", prompt, promptHint);
    const insertPrevious = h(
      "button",
      {
        type: "button",
        class: "secondary small",
        onclick() {
          const at = prompt.selectionStart ?? prompt.value.length;
          prompt.value = `${prompt.value.slice(0, at)}{{previous}}${prompt.value.slice(prompt.selectionEnd ?? at)}`;
          prompt.focus();
          refreshVariables();
        },
      },
      "Insert {{previous}}",
    );
    const paramsSlot = h("div", {});
    const heading = h("h2", {});
    const remove = h("button", { type: "button", class: "secondary small" }, "Remove stage");
    const up = h("button", { type: "button", class: "secondary small" }, "Move up");
    const element = h(
      "li",
      { class: "stage" },
      heading,
      typeField,
      typeHelp,
      promptField,
      insertPrevious,
      paramsSlot,
      h("div", { class: "actions" }, up, remove),
    );
    function buildParams(values) {
      const type = byType[typeSelect.value];
      typeHelp.textContent = type ? type.description : "";
      const params = parameterFields(type, values, {
        idPrefix: `${key}-param`,
        legend: "Parameters (empty = default)",
        modelNames: models.map((model) => model.name),
      });
      clear(paramsSlot, params.element);
      stage.params = params;
    }
    typeSelect.addEventListener("change", () => buildParams({}));
    prompt.addEventListener("input", refreshVariables);
    remove.addEventListener("click", () => {
      stages = stages.filter((s) => s !== stage);
      element.remove();
      renumber();
      refreshVariables();
      (stages[0] ? stages[0].prompt : addButton).focus();
    });
    up.addEventListener("click", () => {
      const at = stages.indexOf(stage);
      if (at <= 0) return;
      [stages[at - 1], stages[at]] = [stages[at], stages[at - 1]];
      element.previousElementSibling.before(element);
      renumber();
      up.focus();
    });
    Object.assign(stage, {
      element,
      prompt,
      typeSelect,
      fields: { type: typeField, body: promptField },
      renumber(at) {
        heading.textContent = `Stage ${at}`;
        remove.setAttribute("aria-label", `Remove stage ${at}`);
        up.setAttribute("aria-label", `Move stage ${at} up`);
        up.disabled = at === 0;
        remove.disabled = stages.length === 1;
      },
      read() {
        const parameters = stage.params.read();
        if (uploadedBody && !prompt.value) return { type: typeSelect.value, inline: false, body: uploadedBody, parameters };
        return { type: typeSelect.value, inline: true, body: prompt.value, parameters };
      },
    });
    stages.push(stage);
    stagesList.append(element);
    buildParams(initial.parameters || {});
    renumber();
    refreshVariables();
    return stage;
  }

  const addButton = h(
    "button",
    { type: "button", class: "secondary", onclick: () => addStage().typeSelect.focus() },
    "Add stage",
  );

  function document_() {
    return { name: name.value.trim(), description: description.value, stages: stages.map((stage) => stage.read()) };
  }

  function load(pipeline) {
    name.value = pipeline.name || "";
    description.value = pipeline.description || "";
    stages.forEach((stage) => stage.element.remove());
    stages = [];
    const given = Array.isArray(pipeline.stages) && pipeline.stages.length ? pipeline.stages : [{}];
    given.slice(0, MAX_STAGES).forEach((stage) => addStage(stage));
  }

  function clearErrors() {
    formError.replaceChildren();
    Object.values(topFields).forEach((f) => f.showError(""));
    for (const stage of stages) {
      Object.values(stage.fields).forEach((f) => f.showError(""));
      Object.values(stage.params.fields).forEach((f) => f.showError(""));
    }
  }

  // loc: ["body", "stages", 1, "parameters", "steps"] or ["body", "name"]
  function placeError(detail) {
    const loc = (detail.loc || []).filter((part) => part !== "body");
    const message = detail.message || detail.msg || "invalid";
    if (loc[0] === "stages" && Number.isInteger(Number(loc[1])) && stages[Number(loc[1])]) {
      const stage = stages[Number(loc[1])];
      const target = loc[2] === "parameters" ? stage.params.fields[loc[3]] : stage.fields[loc[2]];
      if (target) return target.showError(message), target;
      stage.fields.type.showError(message);
      return stage.fields.type;
    }
    if (topFields[loc[0]]) return topFields[loc[0]].showError(message), topFields[loc[0]];
    formError.append(h("p", {}, loc.length ? `${loc.join(".")}: ${message}` : message));
    return null;
  }

  // Visually hidden, out of the tab order: the "Import JSON" button opens it.
  const importInput = h("input", {
    type: "file",
    id: "import-file",
    class: "visually-hidden",
    tabindex: -1,
    "aria-label": "Pipeline JSON file",
    accept: "application/json,.json",
  });
  importInput.addEventListener("change", async () => {
    const [file] = importInput.files;
    if (!file) return;
    try {
      load(JSON.parse(await file.text()));
      app.notify(`Imported ${file.name}.`);
    } catch (error) {
      app.showError(new Error(`${file.name} is not a pipeline JSON file (${error.message})`));
    }
    importInput.value = "";
  });

  const save = h("button", { type: "submit" }, "Create pipeline");
  const form = h(
    "form",
    {
      class: "card",
      novalidate: true,
      async onsubmit(event) {
        event.preventDefault();
        clearErrors();
        save.disabled = true;
        try {
          const created = await app.api.post("/pipelines", document_());
          const target = `#/pipelines/${encodeURIComponent(created.pipelineId)}`;
          app.notify(`Pipeline "${created.name}" created.`, target);
          app.navigate(target);
        } catch (error) {
          const placed = (error.details || []).map(placeError).filter(Boolean);
          if (!error.details || !error.details.length) formError.append(h("p", {}, error.message));
          const first = placed[0] && placed[0].querySelector("input, select, textarea");
          if (first) first.focus();
          else formError.focus();
        } finally {
          save.disabled = false;
        }
      },
    },
    topFields.name,
    topFields.description,
    variablesHint,
    stagesList,
    addButton,
    formError,
    h("div", { class: "actions" }, save),
  );
  formError.tabIndex = -1;
  load(app.draft || { stages: [{ type: stageTypes[0] && stageTypes[0].type }] });
  app.draft = null;

  return h(
    "section",
    {},
    h("h1", {}, "New pipeline"),
    modelNamesList(models),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", class: "secondary", onclick: () => importInput.click() }, "Import JSON"),
      importInput,
      h(
        "button",
        {
          type: "button",
          class: "secondary",
          onclick: () =>
            download(
              `${name.value.trim().replace(/[^\w.-]+/g, "_") || "pipeline"}.json`,
              new Blob([JSON.stringify(document_(), null, 2)], { type: "application/json" }),
            ),
        },
        "Export JSON",
      ),
    ),
    form,
  );
}

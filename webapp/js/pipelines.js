// Browsing pipelines (all, mine, one author's) and one pipeline's page.

import { clear, download, formatRating, formatTime, h } from "./dom.js";
import { executionRows } from "./executions.js";

const PAGE_SIZE = 20;

// A list that fetches page after page on "Load more"; `row` turns an item into a list entry.
export function pagedList(app, { path, query = {}, row, empty, label }) {
  const list = h("ul", { class: "items", "aria-label": label });
  const status = h("p", { class: "hint", role: "status" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  let cursor = null;
  async function load() {
    more.disabled = true;
    try {
      const page = await app.api.get(path, { ...query, limit: PAGE_SIZE, cursor });
      page.items.forEach((item) => list.append(row(item)));
      cursor = page.nextCursor;
      more.hidden = !cursor;
      status.textContent = list.children.length ? "" : empty;
    } catch (error) {
      app.showError(error);
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener("click", load);
  const container = h("div", {}, list, status, more);
  container.ready = load();
  return container;
}

function pipelineRow(item) {
  return h(
    "li",
    { class: "item" },
    h("h2", {}, h("a", { href: `#/pipelines/${encodeURIComponent(item.pipelineId)}` }, item.name)),
    h("p", { class: "description" }, item.description || ""),
    h(
      "p",
      { class: "meta" },
      "by ",
      h("a", { href: `#/users/${encodeURIComponent(item.author)}` }, item.authorName || "someone"),
      ` · ${item.stageCount} stage${item.stageCount === 1 ? "" : "s"} · `,
      h("span", { class: "rating" }, formatRating(item.rating)),
      ` · ${formatTime(item.createdAt)}`,
    ),
  );
}

export async function pipelineListView(app, scope, userId) {
  const titles = { all: "All pipelines", mine: "My pipelines", user: "Pipelines by one author" };
  let authorName = null;
  const path = scope === "all" ? "/pipelines" : `/users/${encodeURIComponent(scope === "mine" ? "me" : userId)}/pipelines`;
  const list = pagedList(app, {
    path,
    row(item) {
      authorName = authorName || item.authorName;
      return pipelineRow(item);
    },
    label: titles[scope],
    empty: scope === "mine" ? "You have no pipelines yet." : "No pipelines here yet.",
  });
  await list.ready;
  const title = scope === "user" && authorName ? `Pipelines by ${authorName}` : titles[scope];
  return h(
    "section",
    {},
    h("div", { class: "heading-row" }, h("h1", {}, title), h("a", { class: "button", href: "#/new" }, "New pipeline")),
    list,
  );
}

function stageCard(stage, index) {
  const parameters = Object.entries(stage.parameters || {});
  return h(
    "li",
    { class: "stage" },
    h("h3", {}, `Stage ${index}: ${stage.type}`),
    stage.inline ? h("pre", { class: "prompt" }, stage.body) : h("p", {}, "Prompt from an upload: ", h("code", {}, stage.body)),
    parameters.length
      ? h("dl", { class: "params" }, parameters.map(([name, value]) => [h("dt", {}, name), h("dd", {}, JSON.stringify(value))]))
      : h("p", { class: "hint" }, "Default parameters."),
  );
}

function ratingControl(app, pipeline, onChange) {
  const scores = [1, 2, 3, 4, 5];
  const group = h("fieldset", { class: "rate" }, h("legend", {}, "Your rating"));
  for (const score of scores) {
    const input = h("input", {
      type: "radio",
      name: "score",
      id: `score-${score}`,
      value: String(score),
      checked: pipeline.rating.mine === score,
      async onchange() {
        try {
          const rating = await app.api.put(`/pipelines/${encodeURIComponent(pipeline.pipelineId)}/rating`, { score });
          onChange(rating);
          app.notify(`You rated it ${score} of 5.`);
        } catch (error) {
          app.showError(error);
        }
      },
    });
    const label = h("label", { for: input.id }, `${score}`, h("span", { class: "visually-hidden" }, " of 5"));
    group.append(h("span", { class: "score" }, input, label));
  }
  return group;
}

export async function pipelineView(app, pipelineId) {
  const id = app.renderId;
  const pipeline = await app.api.get(`/pipelines/${encodeURIComponent(pipelineId)}`);
  if (!app.isCurrent(id)) return null;
  const mine = app.me && app.me.userId === pipeline.author;
  const ratingText = h("p", { class: "rating", role: "status" });
  const showRating = (rating) => {
    pipeline.rating = rating;
    ratingText.textContent =
      formatRating(rating) + (rating.mine ? ` · yours: ${rating.mine} of 5` : mine ? " · your own pipeline" : "");
  };
  showRating(pipeline.rating);

  const actions = h(
    "div",
    { class: "actions" },
    h("a", { class: "button", href: `#/pipelines/${encodeURIComponent(pipelineId)}/run` }, "Run"),
    h(
      "button",
      {
        type: "button",
        class: "secondary",
        onclick: () => {
          const { name, description, stages } = pipeline;
          const json = JSON.stringify({ name, description, stages }, null, 2);
          download(`${name.replace(/[^\w.-]+/g, "_") || "pipeline"}.json`, new Blob([json], { type: "application/json" }));
        },
      },
      "Export JSON",
    ),
    h(
      "button",
      {
        type: "button",
        class: "secondary",
        onclick: () => {
          // Pipelines do not change once made: a copy in the editor is how one builds on another.
          app.draft = { name: `${pipeline.name} (copy)`.slice(0, 100), description: pipeline.description, stages: pipeline.stages };
          app.navigate("#/new");
        },
      },
      "Copy into the editor",
    ),
    mine &&
      h(
        "button",
        {
          type: "button",
          class: "danger",
          async onclick() {
            if (!window.confirm(`Delete the pipeline "${pipeline.name}"? Its executions keep their results.`)) return;
            try {
              await app.api.delete(`/pipelines/${encodeURIComponent(pipelineId)}`);
              app.notify("Pipeline deleted.", "#/mine");
              app.navigate("#/mine");
            } catch (error) {
              app.showError(error);
            }
          },
        },
        "Delete pipeline",
      ),
  );

  const executions = h("div", {});
  const runs = await app.api.get(`/pipelines/${encodeURIComponent(pipelineId)}/executions`, { limit: 20 });
  clear(executions, runs.items.length ? executionRows(runs.items) : h("p", { class: "hint" }, "You have not run it yet."));

  return h(
    "section",
    {},
    h("h1", {}, pipeline.name),
    h(
      "p",
      { class: "meta" },
      "by ",
      h("a", { href: `#/users/${encodeURIComponent(pipeline.author)}` }, pipeline.authorName || "someone"),
      ` · created ${formatTime(pipeline.createdAt)}`,
    ),
    pipeline.description ? h("p", { class: "description" }, pipeline.description) : null,
    ratingText,
    mine ? null : ratingControl(app, pipeline, showRating),
    actions,
    h("h2", {}, "Stages"),
    h("ol", { class: "stages", start: 0 }, pipeline.stages.map(stageCard)),
    h("h2", {}, "Your executions of it"),
    executions,
  );
}

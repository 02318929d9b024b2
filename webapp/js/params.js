// Form fields for a stage's parameters, built from the JSON Schema that `GET /stage-types` gives for its type:
// each field shows its default (as the placeholder) and limits; an empty field means "the default".

import { field, h } from "./dom.js";

// The schema of one property without pydantic's `anyOf [X, null]` wrapper.
function plain(schema) {
  if (schema.anyOf) {
    const inner = schema.anyOf.find((option) => option.type !== "null") || {};
    return { ...inner, ...schema, anyOf: undefined, type: inner.type };
  }
  return schema;
}

function limitsHint(schema) {
  const parts = [];
  if (schema.minimum !== undefined && schema.maximum !== undefined) parts.push(`${schema.minimum}–${schema.maximum}`);
  else if (schema.minimum !== undefined) parts.push(`at least ${schema.minimum}`);
  else if (schema.maximum !== undefined) parts.push(`at most ${schema.maximum}`);
  if (schema.maxLength !== undefined) parts.push(`up to ${schema.maxLength} characters`);
  if (schema.default !== undefined && schema.default !== null) parts.push(`default ${JSON.stringify(schema.default)}`);
  if (schema.description) parts.push(schema.description);
  return parts.join("; ");
}

function control(schema, value, modelNames) {
  const attrs = { value: value === undefined || value === null ? "" : String(value) };
  if (schema.default !== undefined && schema.default !== null) attrs.placeholder = String(schema.default);
  if (schema.type === "integer" || schema.type === "number") {
    return h("input", {
      ...attrs,
      type: "number",
      inputmode: schema.type === "integer" ? "numeric" : "decimal",
      step: schema.type === "integer" ? 1 : "any",
      min: schema.minimum,
      max: schema.maximum,
    });
  }
  if (schema.type === "string" || schema.type === undefined) {
    const input = h("input", { ...attrs, type: "text", maxlength: schema.maxLength });
    if (modelNames && modelNames.length) input.setAttribute("list", "model-names");
    return input;
  }
  // Anything richer (arrays such as `loras`): JSON text.
  return h("input", { ...attrs, type: "text", value: value === undefined ? "" : JSON.stringify(value) });
}

function parse(schema, raw) {
  const text = raw.trim();
  if (text === "") return undefined;
  if (schema.type === "integer") return Number.parseInt(text, 10);
  if (schema.type === "number") return Number(text);
  if (schema.type === "string" || schema.type === undefined) return text;
  try {
    return JSON.parse(text);
  } catch {
    return text; // the API answers 422 at this field
  }
}

// { element, read() -> {name: value} with only the filled fields, fields: {name: fieldWrapper} }
export function parameterFields(stageType, values, { idPrefix, legend, modelNames }) {
  const properties = (stageType && stageType.parameters && stageType.parameters.properties) || {};
  const fields = {};
  const inputs = {};
  const element = h("fieldset", { class: "params-grid" }, h("legend", {}, legend));
  for (const [name, rawSchema] of Object.entries(properties)) {
    const schema = plain(rawSchema);
    const input = control(schema, (values || {})[name], name === "model" ? modelNames : null);
    input.id = `${idPrefix}-${name}`;
    input.name = name;
    inputs[name] = [input, schema];
    fields[name] = field(name, input, limitsHint(schema));
    element.append(fields[name]);
  }
  function read() {
    const out = {};
    for (const [name, [input, schema]] of Object.entries(inputs)) {
      const value = parse(schema, input.value);
      if (value !== undefined) out[name] = value;
    }
    return out;
  }
  return { element, read, fields };
}

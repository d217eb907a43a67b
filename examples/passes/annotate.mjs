/**
 * An example user pass for `titanize convert --pass`: after the memory is added, it writes
 * a one-line summary of the conversion into the model's doc_string and a metadata entry,
 * reading the pipeline's shared context (the converted sites and the resolved options).
 *
 *   titanize convert model.onnx -o titan.onnx --pass examples/passes/annotate.mjs --pass-after tptt-memory
 */
export default {
  name: 'annotate',
  description: 'records which layers were converted, with which rule, in the doc_string and metadata',
  effects: ['doc_string', 'metadata'],
  run(model, context) {
    const layers = context.converted.map((s) => s.layer);
    const summary = `titanize: layers ${layers.join(', ')} converted (rule ${context.options.rule}, order ${context.options.order}, μ ${context.options.mu})`;
    model.docString = model.docString ? `${model.docString}\n${summary}` : summary;
    model.metadataProps.push({ key: 'example.annotate.layers', value: layers.join(',') });
    return { modified: true };
  },
};

"""Knowledge graph to tool-use data: executable, verified multi-step tool-call conversations.

Layers, each usable on its own:
- `kg.graph`: load TSV / labelled FB15k-237 / N-Triples into a compact indexed graph (cached).
- `kg.tools`: relations (and inverses) as OpenAI-style tools, plus set tools and entity lookup;
  an executor that answers calls with JSON results or error objects.
- `kg.query`: the JSON query tree, its evaluation, and seeded sampling of the 14 structures.
- `kg.verbalize`: template and LLM question writers.
- `kg.conversation`: system prompt, question, step-by-step tool calls, final answer.
- `kg.verify`: re-execute a conversation against the graph.
- `kg.generate`: the sample factory used by the CLI, the `kg_walk` stage and the benchmark.
- `kg.export`: ShareGPT and Hermes renderings, and chat-template-ready messages.
"""

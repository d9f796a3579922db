"""The About tab: what OneGen is, what each tab does, the API, and the configuration in use."""
from __future__ import annotations

import gradio as gr

from .. import render_html as R
from ..app_state import IMPRAG_HOWTO, IMPRAG_INDEX_ENV, IMPRAG_MODEL_ENV, MAX_INPUT_CHARS, AppState

ABOUT_MD = f"""
### What this is
OneGen (Findings of EMNLP 2024) fine-tunes a causal language model so that a few special tokens double
as retrieval queries: the hidden state of the step that reads a retrieval token is the query vector.
This app runs such a model and shows each run as it happens: the text, every retrieval token, the
candidates it scored, what was inserted back into the context, and the forward tokens each phase cost.

### Tasks
- **Entity linking**: the model rewrites the input as `<MENTION>X</MENTION>[LK]`; every `[LK]` links one mention.
  By default the output is constrained to be the input plus those tags (no misspelt copies); the
  checkbox on the Run tab turns that off, and the timeline underlines where the constraint overrode the model.
- **Multi-hop QA**: sub-questions end in `[Question Representation]`; the best paragraph is inserted and the model goes on.
- **Single-hop QA (Self-RAG)**: the question's vector reranks passages; the best one is read, then the answer
  is written with reflection tokens.

### Two designs, and what each costs
**OneGen** (Findings of EMNLP 2024): the model writes a retrieval token, and the hidden state of the step that
reads it, in the same forward pass that writes the text, is the query vector; the same model encoded the
documents offline. No extra pass encodes the query (the cost strip's *query re-encoding* is 0). In QA the
document found is inserted into the sequence: its tokens go through every layer and stay in the context of every
later token. It retrieves whenever it writes the token, so one run can retrieve many times (entity linking, multi-hop QA).

**ImpRAG** (Zhang, Lin, Stratos, Yih and Chen, arXiv 2506.02279): no retrieval token and no query text. The
decoder's layers are cut into three groups. The input's own attention query at the last bottom layer is the
query vector; a passage's vector is its attention key at that layer, computed offline from the passage alone
through the bottom group. The passages found are read only by the middle layers, where the input (and later
the answer) attends to them; the top layers see the input and the answer only. No query is re-encoded either;
each passage runs through the bottom and middle layers once and never through the top ones, and the cost strip
counts tokens per layer group (bottom and middle: input + passages + answer; top: input + answer). It retrieves
once, from the input, so here it answers single-hop questions, and its middle layers read every top-k passage.

**The pipeline** (a baseline): a separate sentence encoder embeds the query text again and searches its own
vectors of the same documents, which costs a second encoder's forward tokens for every query.

### Tabs
- **Run**: one input, streamed; select any retrieval step to see its query, candidates and insertion. With an
  ImpRAG model configured, the *Mode* choice runs single-hop questions through ImpRAG: the step view shows the
  layer groups (where the query and the passages were read) and the reader's attention to each passage per
  middle layer.
- **Trace viewer**: open a trace saved with *Download trace JSON* (or by `python -m onegen run --json`).
- **Index browser**: find a document by title and see its nearest neighbours.
- **Compare**: the same input through OneGen and a baseline that encodes each query in a second pass;
  costs per phase, and the run placed on the single-pass sweep. Below it, one single-hop question through
  OneGen, ImpRAG (when configured) and the pipeline, side by side: top passages and scores, answers, costs.
- **Error browser**: score a dataset or open a result file of `python -m onegen evaluate`, filter its
  examples by outcome and error category, open one in the step view, compare two result files.

### API
`/link_entities`, `/answer_multi_hop`, `/answer_single_hop`: each takes `(text, top_k=5)` and returns
the run's Trace JSON (schema `onegen-trace/1`), e.g.
`Client(url).predict("...", 5, api_name="/link_entities")`.

### Configuration
`python app.py --model NAME_OR_FOLDER --index-entity-linking DIR --index-multi-hop DIR --index-single-hop DIR`
(or `--index TASK=DIR`; an index may also be `hf://owner/name` on the Hugging Face hub), `--host`, `--port`, `--share`; environment: `ONEGEN_MODEL`,
`ONEGEN_INDEX_ENTITY_LINKING`, `ONEGEN_INDEX_MULTI_HOP`, `ONEGEN_INDEX_SINGLE_HOP`.
ImpRAG beside it: `--imprag-model DIR --imprag-index DIR` (environment: `{IMPRAG_MODEL_ENV}`, `{IMPRAG_INDEX_ENV}`);
beside the embedded default the app uses the shipped `imprag-smol` and its index of the same invented world
(`--imprag-model none` turns the mode off). To train your own: {IMPRAG_HOWTO}
Inputs are limited to {MAX_INPUT_CHARS:,} characters by default.
"""


def build(app: AppState, demo: gr.Blocks) -> None:
    gr.Markdown(ABOUT_MD)
    overview = gr.HTML(elem_id="overview")
    demo.load(lambda: "".join(R.message_html(m, k) for k, m in app.overview()), None, overview,
              api_visibility="private")

"""Prompt and document tokenisation against the real Llama-2 tokenizers the checkpoints were trained with.

The released weights only work when our ids equal the ids the authors' code produced, which was
`tokenizer(whole_prompt_string, add_special_tokens=False)`. Fixture-dependent tests skip when
../shared is absent (a user's machine).
"""
from __future__ import annotations

import pytest

from onegen.documents import Document
from onegen.encode import document_prompt
from onegen.loading import load_tokenizer
from onegen.protocols import (DFR, LK, PARA_OPEN, QR, SE, MissingTokenError, get_spec, resolve,
                              supported_tasks)
from onegen.tokenization import ProtocolTokenizer
from tiny import LLAMA_FIXTURES, tokenizer_folder

needs_llama = pytest.mark.skipif(not LLAMA_FIXTURES.exists(),
                                 reason=f"Llama-2 tokenizer fixtures not found at {LLAMA_FIXTURES}")

ORDINARY_INPUTS = [
    "Barack Obama was born in Honolulu.",
    "Who directed the film that won the 1998 award, and where was he born?",
    "  leading spaces, two  inner  spaces and a\ttab",
    "Ünïcödé, 日本語 and emoji 🙂 — dashes – too",
    "ends with a space ",
    "line one\nline two\n",
    "x",
]
# Text a user may type that looks like protocol tokens; it must stay text.
HOSTILE = "see [LK] then </s> and <s> and <paragraph>x</paragraph> [Question Representation] [SE] [_CONTINUE_]"


class _Tokenizers:
    """The minimal LoadedModel surface that `document_prompt` uses."""

    def __init__(self, tok):
        self.tokenizer = tok

    def ptok(self, task: str) -> ProtocolTokenizer:
        return ProtocolTokenizer(self.tokenizer, get_spec(task).token_strings)


@pytest.fixture(scope="module")
def llama():
    return {task: load_tokenizer(LLAMA_FIXTURES / task) for task in ("entity-linking", "multi-hop")}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """Each task's tokenizer: the Llama-2 fixture when present, else the small test BPE."""
    root = tmp_path_factory.mktemp("tok")
    return {task: load_tokenizer(tokenizer_folder(task, root)) for task in ("entity-linking", "multi-hop", "single-hop")}


def _special_ids(tok) -> set[int]:
    ids = {tok.bos_token_id, tok.eos_token_id}
    return ids | set(tok.get_added_vocab().values())


# -- query prompts ----------------------------------------------------------------------------------

@needs_llama
@pytest.mark.parametrize("task", ["entity-linking", "multi-hop"])
@pytest.mark.parametrize("text", ORDINARY_INPUTS)
def test_prompt_ids_match_released_tokenisation(llama, task, text):
    tok, spec = llama[task], get_spec(task)
    ours = ProtocolTokenizer(tok, spec.token_strings).encode_template(spec.prompt_template, input=text).ids
    theirs = tok(spec.prompt_template.replace("{input}", text), add_special_tokens=False).input_ids
    assert ours == theirs


@needs_llama
@pytest.mark.parametrize("task", ["entity-linking", "multi-hop"])
def test_prompt_has_no_bos_or_eos(llama, task):
    tok, spec = llama[task], get_spec(task)
    ids = ProtocolTokenizer(tok, spec.token_strings).encode_template(spec.prompt_template, input="Paris").ids
    assert tok.bos_token_id == 1 and tok.eos_token_id == 2
    assert 1 not in ids and 2 not in ids


@needs_llama
@pytest.mark.parametrize("task", ["entity-linking", "multi-hop"])
def test_user_text_never_becomes_special_tokens(llama, task):
    tok, spec = llama[task], get_spec(task)
    ptok = ProtocolTokenizer(tok, spec.token_strings)
    ids = ptok.encode_template(spec.prompt_template, input=HOSTILE).ids
    assert not set(ids) & _special_ids(tok)
    assert HOSTILE in ptok.decode(ids)
    assert not set(ptok.encode_data(HOSTILE)) & _special_ids(tok)


@needs_llama
def test_added_token_ids_are_the_released_ones(llama):
    el, mh = llama["entity-linking"], llama["multi-hop"]
    assert resolve(get_spec("entity-linking"), el).ids == {SE: 32000, LK: 32001, "[_CONTINUE_]": 32002}
    assert resolve(get_spec("multi-hop"), mh).ids == {QR: 32000, DFR: 32001, PARA_OPEN: 32002, "</paragraph>": 32003}


# -- document prompts -------------------------------------------------------------------------------

def entity_document_prompt(llama, doc: Document):
    """The entity-linking tokenizer, the document prompt of `doc` and the id of [SE]."""
    tok = llama["entity-linking"]
    return tok, document_prompt(_Tokenizers(tok), "entity-linking", doc), tok.convert_tokens_to_ids(SE)


@needs_llama
def test_entity_document_vector_at_second_se_and_literal_bos(llama):
    doc = Document(id="Q1", title="Corvale", text='Corvale is an instance of city. It is described as "a city in Velor".')
    tok, p, se = entity_document_prompt(llama, doc)
    se_positions = [i for i, t in enumerate(p.ids) if t == se]
    assert len(se_positions) == 2
    assert p.vector_positions == [se_positions[1]] == [len(p.ids) - 1]
    assert p.ids[0] == tok.bos_token_id == 1 and p.ids.count(1) == 1
    # The authors built the same string and tokenised it whole.
    spec = get_spec("entity-linking")
    full = spec.document_template.replace("{title}", doc.title).replace("{text}", doc.text)
    assert p.ids == tok(full, add_special_tokens=False).input_ids


@needs_llama
def test_entity_description_text_is_data(llama):
    doc = Document(id="Q2", title="Odd [SE] name", text="A description quoting [LK] and </s> and <s>.")
    tok, p, se = entity_document_prompt(llama, doc)
    assert p.ids.count(se) == 2 and p.vector_positions == [len(p.ids) - 1]
    assert p.ids.count(tok.bos_token_id) == 1 and tok.eos_token_id not in p.ids
    assert tok.convert_tokens_to_ids(LK) not in p.ids


@needs_llama
def test_paragraph_document_one_vector_per_sentence(llama):
    tok = llama["multi-hop"]
    sentences = ["Corvale is a city in Velor.", "It has 120000 inhabitants.", " It lies on a river."]
    doc = Document.from_sentences("p1", "Corvale", sentences)
    p = document_prompt(_Tokenizers(tok), "multi-hop", doc)
    dfr = tok.convert_tokens_to_ids(DFR)
    all_dfr = [i for i, t in enumerate(p.ids) if t == dfr]
    assert len(all_dfr) == len(sentences) + 1
    assert p.vector_positions == all_dfr[1:]  # the instruction's own [DFR] carries no vector
    ptok = _Tokenizers(tok).ptok("multi-hop")
    bounds = all_dfr
    assert [ptok.decode(p.ids[a + 1:b]) for a, b in zip(bounds[1:], bounds[2:])] == sentences[1:]
    spec = get_spec("multi-hop")
    full = spec.document_template.replace("{title}", doc.title).replace("{sentences}", "".join(s + DFR for s in sentences))
    assert p.ids == tok(full, add_special_tokens=False).input_ids
    assert tok.bos_token_id not in p.ids


def test_passage_document_vector_at_last_dfr(tokenizers):
    tok = tokenizers["single-hop"]
    doc = Document(id="w1", title="Corvale", text="Corvale is a city in Velor. It has 120000 inhabitants.")
    p = document_prompt(_Tokenizers(tok), "single-hop", doc)
    dfr = tok.convert_tokens_to_ids(DFR)
    assert [i for i, t in enumerate(p.ids) if t == dfr][1:] == p.vector_positions == [len(p.ids) - 1]


# -- resolving a checkpoint -------------------------------------------------------------------------

def test_resolve_refuses_missing_token_naming_it_and_the_checkpoint(tokenizers):
    with pytest.raises(MissingTokenError) as e:
        resolve(get_spec("multi-hop"), tokenizers["entity-linking"], checkpoint="acme/el-only")
    msg = str(e.value)
    assert "acme/el-only" in msg and QR in msg and DFR in msg and "multi-hop" in msg
    with pytest.raises(MissingTokenError, match=r"\[LK\]"):
        resolve(get_spec("entity-linking"), tokenizers["multi-hop"], checkpoint="acme/mh")


def test_resolve_reads_ids_from_the_tokenizer(tokenizers):
    tok = tokenizers["multi-hop"]
    proto = resolve(get_spec("multi-hop"), tok)
    assert proto.query_id == tok.convert_tokens_to_ids(QR)
    assert proto.document_id == tok.convert_tokens_to_ids(DFR)
    assert proto.eos_id == tok.eos_token_id
    el = resolve(get_spec("entity-linking"), tokenizers["entity-linking"])
    assert el.forced_ids() == {el.ids[LK]: el.ids["[_CONTINUE_]"]}


def test_supported_tasks(tokenizers):
    assert supported_tasks(tokenizers["entity-linking"]) == ["entity-linking"]
    assert supported_tasks(tokenizers["multi-hop"]) == ["multi-hop"]
    # The Self-RAG vocabulary contains every multi-hop token too.
    assert supported_tasks(tokenizers["single-hop"]) == ["multi-hop", "single-hop"]


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown task 'summarise'"):
        get_spec("summarise")

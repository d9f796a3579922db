"""The why views' text and HTML (onegen/render_why.py) from hand-made views: markup in token text
and titles stays text, retrieval tokens are marked, and each view says what it cost."""
from __future__ import annotations

from onegen.attention_read import AttentionRead, LayerGroup, Paragraph, ReadToken
from onegen.lens import LayerRow, LayerView, LensHit, LensToken, QueryLens
from onegen.render_why import attention_html, attention_text, layers_html, layers_text, lens_html, lens_text

BAD = '<img src=x onerror="alert(1)">'


def lens() -> QueryLens:
    hits = [LensHit("d1", BAD, 0.9), LensHit("d2", "Velor", 0.5), LensHit("d3", "Corvale", 0.4)]
    return QueryLens(task="multi-hop", mode="onegen", index="idx (3 documents)", tokens=[
        LensToken(index=0, position=10, text=BAD, score=0.3, top=hits[1:] + hits[:1], retrieval=0, agrees=False),
        LensToken(index=1, position=11, text="\n", score=0.5, top=hits[1:] + hits[:1], retrieval=0, agrees=False),
        LensToken(index=2, position=12, text="[QR]", score=0.9, top=hits, retrieval=0, query=True, agrees=True),
        LensToken(index=3, position=40, text=" after", score=0.2, top=hits, retrieval=None, agrees=None),
    ], forward_tokens=41, forward_seconds=0.25, searches=4, search_seconds=0.002)


def read() -> AttentionRead:
    return AttentionRead(task="multi-hop", paragraphs=[Paragraph(0, BAD, 13, 30)],
                         groups=[LayerGroup("bottom", 0, 0), LayerGroup("top", 1, 1)],
                         tokens=[ReadToken(3, 40, BAD, [0.25], 0.75, [[0.4], [0.1]])], forward_tokens=41, seconds=0.3)


def test_lens_html_escapes_and_marks_the_retrieval_token():
    html = lens_html(lens())
    assert BAD not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert html.count('class="og-lens-cell og-lens-query og-lens-agree"') == 1
    assert html.count("og-lens-cell") == 4 and html.count("<li>") == 12  # top-3 per token
    assert "1 of 1 finding the document the run chose" in html
    assert "1 forward of 41 tokens" in html and "4 extra searches" in html
    assert "\u21b5" in html  # a newline token stays visible


def test_lens_text_marks_retrieval_tokens_and_agreement():
    text = lens_text(lens())
    rows = [line for line in text.splitlines() if line.startswith((">> ", "   "))]
    assert len(rows) == 4 and rows[2].startswith(">> [QR]") and rows[2].rstrip().endswith("= " + BAD)
    assert " x Velor" in rows[0] and "retrieval tokens finding the chosen document: 1 of 1; other tokens: 0 of 2" in text


def test_attention_views_per_group_and_escaped():
    r = read()
    html = attention_html(r)
    assert BAD not in html and "25.0%" in html and "all layers" in html and "rest (prompt and written text): 75.0%" in html
    top = attention_html(r, "top")
    assert "the top layers (2 to 2)" in top and "10.0%" in top
    assert "all layers" in attention_html(r, "middle")  # a group this model lacks: all layers
    assert "<- [1]" in attention_text(r)
    none = AttentionRead("entity-linking", [], [], [], 0, 0.0, note="Entity linking inserts no paragraph: <b>")
    assert "inserts no paragraph: &lt;b&gt;" in attention_html(none)
    assert attention_text(none).startswith("what it read: Entity linking inserts no paragraph")


def test_layer_views_escape_titles_and_show_ranks():
    view = LayerView(step=1, chosen_id="d1", chosen_title=BAD, documents=3, layers=[
        LayerRow(0, 3, 0.1, "d2", "Velor", 0.3), LayerRow(1, 1, 0.9, "d1", BAD, 0.9)],
        forward_tokens=120, seconds=1.5)
    html = layers_html(view)
    assert BAD not in html and html.count("<tr data-layer=") == 2 and "#3" in html and "#1" in html
    assert "embeddings" in html and "layer 1" in html and "120 forward tokens" in html
    text = layers_text(view)
    assert "layer view of retrieval step 2" in text and "  emb" in text
    assert "refused" in layers_html(None, "refused: too big")

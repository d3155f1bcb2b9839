"""Ember inside LlamaIndex and LangChain, with the real MiniLM and the real SmolLM2: a LlamaIndex query engine
and a LangChain retrieval chain answer over an Ember collection (also streaming), a LlamaIndex
`VectorStoreIndex` is built on a collection, and their readers and splitters run inside `ember ingest`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ember.model.backends.ember import EmberBackend
from ember.retrieval.chunking import ChunkConfig
from ember.retrieval.collection import Collection, CollectionConfig
from ember.retrieval.embedders import SentenceTransformerEmbedder
from ember.retrieval.ingest import IngestOptions, check_extras, ingest
from ember.retrieval.integrations import MissingExtraError
from ember.retrieval.loaders.folder import load_file
from ember.retrieval.retriever import Retriever

from ..platform.test_cli import run
from .conftest import FASTAPI, consistent

DOCS = Path(__file__).resolve().parents[2] / "docs"
QUESTION = "How do I create an API key for the server?"


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory, minilm: SentenceTransformerEmbedder) -> Iterator[Retriever]:
    col = Collection.create(tmp_path_factory.mktemp("interop"), "docs", minilm.info, CollectionConfig())
    ingest(col, minilm, DOCS)
    yield Retriever(col, minilm, mode="hybrid", k=3)
    col.close()


# ---- LlamaIndex -------------------------------------------------------------------------------------------
@pytest.mark.smollm2
@pytest.mark.slow
def test_llamaindex_query_engine_answers_over_an_ember_collection(retriever: Retriever, backend: EmberBackend) -> None:
    from llama_index.core.base.response.schema import StreamingResponse
    from llama_index.core.query_engine import RetrieverQueryEngine

    from ember.retrieval.integrations.llamaindex import EmberLLM, EmberRetriever

    llm = EmberLLM(backend, num_output=24)
    engine = RetrieverQueryEngine.from_args(EmberRetriever(retriever), llm=llm)
    response = engine.query(QUESTION)
    assert str(response).strip() and len(backend.tokenizer.encode(str(response), add_special_tokens=False)) <= 25
    top = response.source_nodes[0]
    assert Path(top.node.metadata["source"]).name == "server.md" and "ember keys create" in top.node.get_content()
    assert top.node.node_id == str(retriever.search(QUESTION)[0].chunk.id)  # Ember's ranking, Ember's ids

    streaming = RetrieverQueryEngine.from_args(EmberRetriever(retriever), llm=llm, streaming=True)
    streamed = streaming.query(QUESTION)
    assert isinstance(streamed, StreamingResponse)
    pieces = list(streamed.response_gen)
    assert len(pieces) > 3 and "".join(pieces).strip()
    assert "".join(pieces) == str(response)  # greedy: the stream adds up to the same answer


@pytest.mark.smollm2
@pytest.mark.slow
def test_llamaindex_vector_store_index_on_an_ember_collection(tmp_path: Path, minilm: SentenceTransformerEmbedder,
                                                              backend: EmberBackend) -> None:
    from llama_index.core import Document, StorageContext, VectorStoreIndex

    from ember.retrieval.integrations.llamaindex import EmberEmbedding, EmberLLM, EmberVectorStore

    col = Collection.create(tmp_path, "li", minilm.info, CollectionConfig())
    store = EmberVectorStore(col, minilm)
    docs = [Document(text=(DOCS / name).read_text(), doc_id=name, metadata={"file_name": name})
            for name in ("server.md", "engine.md")]
    index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store),
                                            embed_model=EmberEmbedding(minilm))
    consistent(col)  # SQLite, FAISS and BM25 agree: it is an ordinary Ember collection now
    assert set(col.documents()) == {"server.md", "engine.md"} and col.counts()[1] >= 2
    hits = Retriever(col, minilm, mode="hybrid", k=1).search(QUESTION)  # Ember's own hybrid search on it
    assert hits[0].chunk.source == "server.md" and hits[0].chunk.text in docs[0].text

    answer = index.as_query_engine(llm=EmberLLM(backend, num_output=16), similarity_top_k=2).query(QUESTION)
    assert str(answer).strip() and answer.source_nodes[0].node.metadata["source"] == "server.md"
    index.delete_ref_doc("engine.md")
    assert set(col.documents()) == {"server.md"}
    col.close()


def test_llamaindex_embedding_is_the_ember_embedder(minilm: SentenceTransformerEmbedder) -> None:
    from ember.retrieval.integrations.llamaindex import EmberEmbedding

    emb = EmberEmbedding(minilm)
    texts = ["a kettle boils water", "quokkas live on Rottnest Island"]
    assert np.allclose(emb.get_text_embedding_batch(texts), minilm.embed(texts), atol=1e-6)
    assert np.allclose(emb.get_query_embedding("tea"), minilm.embed(["tea"])[0], atol=1e-6)


# ---- LangChain --------------------------------------------------------------------------------------------
@pytest.mark.smollm2
@pytest.mark.slow
def test_langchain_retrieval_chain_answers_and_streams(retriever: Retriever, backend: EmberBackend) -> None:
    from langchain_classic.chains import RetrievalQA, create_retrieval_chain
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain
    from langchain_core.prompts import ChatPromptTemplate

    from ember.retrieval.integrations.langchain import ChatEmber, EmberRetriever

    llm = ChatEmber(backend=backend, max_tokens=24)
    lc_retriever = EmberRetriever(retriever=retriever)
    qa = RetrievalQA.from_chain_type(llm, retriever=lc_retriever, return_source_documents=True)  # default prompt
    out = qa.invoke({"query": QUESTION})
    assert out["result"].strip() and Path(out["source_documents"][0].metadata["source"]).name == "server.md"
    assert "ember keys create" in out["source_documents"][0].page_content

    prompt = ChatPromptTemplate.from_messages([("system", "Answer from the context.\n\n{context}"),
                                               ("human", "{input}")])
    chain = create_retrieval_chain(lc_retriever, create_stuff_documents_chain(llm, prompt))
    parts = [p["answer"] for p in chain.stream({"input": QUESTION}) if "answer" in p]
    assert len(parts) > 3 and "".join(parts).strip()

    chunks = list(llm.stream("Say hello."))
    full = chunks[0]
    for c in chunks[1:]:
        full += c
    assert len(chunks) > 1 and full.response_metadata["finish_reason"] in ("stop", "length")
    assert full.usage_metadata is not None and 1 <= full.usage_metadata["output_tokens"] <= 24


def test_langchain_embeddings_and_retriever(retriever: Retriever, minilm: SentenceTransformerEmbedder) -> None:
    from ember.retrieval.integrations.langchain import EmberEmbeddings, EmberRetriever

    emb = EmberEmbeddings(minilm)
    assert np.allclose(emb.embed_documents(["tea", "coffee"]), minilm.embed(["tea", "coffee"]), atol=1e-6)
    docs = EmberRetriever(retriever=retriever, mode="bm25", k=2).invoke("ember keys create")
    hits = retriever.search("ember keys create", mode="bm25", k=2)
    assert [d.id for d in docs] == [str(h.chunk.id) for h in hits] and len(docs) == 2
    assert docs[0].page_content == hits[0].chunk.text and docs[0].metadata["end"] == hits[0].chunk.end


# ---- their readers and splitters inside Ember ------------------------------------------------------------
def test_docx_ingests_through_the_llamaindex_loader(tmp_path: Path, minilm: SentenceTransformerEmbedder) -> None:
    import docx

    folder = tmp_path / "in"
    folder.mkdir()
    d = docx.Document()
    d.add_heading("Kettle manual", level=1)
    d.add_paragraph("The Ember kettle boils a litre of water in ninety seconds.")
    d.add_paragraph("Descale it every month with white vinegar.")
    d.save(str(folder / "manual.docx"))
    (folder / "notes.md").write_text("# Notes\n\nQuokkas live on Rottnest Island.\n")

    col = Collection.create(tmp_path / "data", "mix", minilm.info, CollectionConfig())
    plain = ingest(col, minilm, folder)  # Ember alone does not read docx, and says how to
    assert plain.added == [(folder / "notes.md").resolve().as_posix()] and "unsupported" in plain.skipped[0].reason
    report = ingest(col, minilm, folder, IngestOptions(loader="llamaindex"))
    assert report.added == [(folder / "manual.docx").resolve().as_posix()] and report.unchanged == 1
    doc = col.documents()[(folder / "manual.docx").resolve().as_posix()]
    assert doc.kind == "docx" and doc.title == "manual"
    hit = Retriever(col, minilm, mode="dense", k=1).search("How fast does the kettle boil water?")[0]
    assert hit.chunk.source.endswith("manual.docx") and "ninety seconds" in hit.chunk.text
    consistent(col)
    col.close()


@pytest.mark.parametrize("splitter", ["langchain-recursive", "llamaindex-sentence"])
def test_splitters_give_chunks_with_exact_spans(splitter: str, minilm: SentenceTransformerEmbedder) -> None:
    from ember.retrieval.ingest import make_chunker

    doc = load_file(FASTAPI / "tutorial" / "query-params.md")
    counter = minilm.token_counter()
    chunks = make_chunker(splitter, counter, ChunkConfig(96, 16)).chunk(doc)
    assert len(chunks) > 5
    starts = [c.start for c in chunks]
    assert starts == sorted(starts) and all(doc.text[c.start:c.end] == c.text and c.text for c in chunks)
    assert all(c.tokens == len(counter.token_starts(c.text)) for c in chunks)
    assert all(c.tokens <= 96 for c in chunks) or splitter == "llamaindex-sentence"  # it may overshoot one sentence
    covered = np.zeros(len(doc.text), bool)
    for c in chunks:
        covered[c.start:c.end] = True
    assert all(covered[i] or doc.text[i].isspace() for i in range(len(doc.text)))  # nothing lost between chunks


def test_missing_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain_text_splitters", None)  # as if it were not installed
    with pytest.raises(MissingExtraError) as e:
        check_extras(IngestOptions(splitter="langchain-recursive"))
    assert "langchain-text-splitters" in e.value.message and "pip install 'ember[integrations]'" in str(e.value.hint)
    with pytest.raises(ValueError, match="splitter must be one of"):
        IngestOptions(splitter="nltk")


def test_cli_ingest_with_llamaindex_loader_and_langchain_splitter(tmp_path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_paragraph("Rottnest Island is home to the quokka, a small marsupial.")
    (tmp_path / "docs").mkdir()
    d.save(str(tmp_path / "docs" / "quokka.docx"))
    env = {"EMBER_DATA_DIR": str(tmp_path / "data")}
    out = run("ingest", "docs", "-c", "q", "--loader", "llamaindex", "--splitter", "langchain-recursive",
              cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "loader llamaindex, splitter langchain-recursive" in out.stdout and "1 added" in out.stdout
    bad = run("ingest", "docs", "-c", "q2", "--splitter", "nltk", cwd=tmp_path, env=env)
    assert bad.returncode != 0 and "splitter must be one of" in bad.stderr

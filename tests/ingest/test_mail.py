"""E-mail (.eml) and mailboxes (.mbox): headers as metadata, bodies, attachments as child documents.

Every input is written by the standard library (``EmailMessage``, ``mailbox.mbox``) with real attachments
(a reportlab PDF); nothing here hand-writes MIME.
"""

from __future__ import annotations

import email.policy
import mailbox
import re
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.loaders import load_file
from rag.ingest.parsers import ParseLimits, ParserRegistry
from rag.ingest.parsers.mail import split_mbox
from rag.testing.parsers import ParserContractTests


def message(subject: str | None = "Quarterly report", body: str | None = "Hi Bob,\n\nthe numbers are in.\n",
            **headers: str) -> EmailMessage:
    """A real message with the usual headers; ``headers`` adds or overrides (``Message_ID=...``)."""
    msg = EmailMessage()
    if subject is not None:
        msg["Subject"] = subject
    defaults = {"From": "Alice Smith <Alice@Example.com>", "To": "bob@example.com, Carol <carol@example.com>",
                "Date": "Mon, 06 May 2024 10:00:00 +0200", "Message-ID": "<q1-report@example.com>"}
    for key, value in {**defaults, **{k.replace("_", "-"): v for k, v in headers.items()}}.items():
        if value:
            msg[key] = value
    if body is not None:
        msg.set_content(body)
    return msg


def load(path: Path, problems: list[tuple[str, str]] | None = None, **kwargs: object) -> list[Document]:
    return load_file(path, doc_id=f"docs/{path.name}", source=f"docs/{path.name}", problems=problems, **kwargs)


@pytest.fixture
def pdf_bytes(make_pdf: Callable[..., Path]) -> bytes:
    return make_pdf(["Attached findings: the turbine blades show hairline cracks."], name="findings.pdf").read_bytes()


def write_eml(tmp_path: Path, msg: EmailMessage, name: str = "mail.eml") -> Path:
    path = tmp_path / name
    path.write_bytes(msg.as_bytes())
    return path


# -- one message ----------------------------------------------------------------------------------------


def test_headers_become_filterable_metadata_and_the_subject_the_title(tmp_path: Path) -> None:
    msg = message(Cc="Dave <dave@example.org>", In_Reply_To="<earlier@example.com>")
    [doc] = load(write_eml(tmp_path, msg))
    meta = doc.metadata
    assert doc.title == meta["subject"] == "Quarterly report"
    assert (meta["from"], meta["from_name"]) == ("alice@example.com", "Alice Smith")
    assert meta["to"] == ["bob@example.com", "carol@example.com"] and meta["cc"] == ["dave@example.org"]
    assert meta["date"] == "2024-05-06T08:00:00Z"  # +0200 converted to UTC
    assert (meta["message_id"], meta["in_reply_to"]) == ("q1-report@example.com", "earlier@example.com")
    assert meta["format"] == "eml" and "attachments" not in meta
    # The reader's view: subject, a header block, the body; all under the subject's heading.
    assert doc.text.startswith("Quarterly report\n\nFrom: Alice Smith <Alice@Example.com>\n")
    assert doc.text.endswith("Hi Bob,\n\nthe numbers are in.")
    assert {section.headings for section in doc.sections} == {("Quarterly report",)}


def test_plain_body_is_preferred_to_its_html_alternative(tmp_path: Path) -> None:
    msg = message(body="Plain words only.")
    msg.add_alternative("<p>Rich <b>HTML</b> words only.</p>", subtype="html")
    [doc] = load(write_eml(tmp_path, msg))
    assert "Plain words only." in doc.text and "HTML words" not in doc.text


def test_html_only_body_is_read_as_text_with_its_headings(tmp_path: Path) -> None:
    msg = message(body=None)
    msg.set_content(
        "<html><head><style>p {color: red}</style></head><body><h1>Agenda</h1><p>Budget &amp; hiring.</p>"
        "<script>track()</script><table><tr><td><p>Laid out in a table.</p></td></tr></table></body></html>",
        subtype="html",
    )
    [doc] = load(write_eml(tmp_path, msg))
    assert "Budget & hiring." in doc.text and "Laid out in a table." in doc.text
    assert "<p>" not in doc.text and "track()" not in doc.text and "color" not in doc.text
    assert ("Quarterly report", "Agenda") in {section.headings for section in doc.sections}


def test_mislabelled_charset_is_detected(tmp_path: Path) -> None:
    msg = message(body="Grüße aus Köln, die Größe stimmt.", cte="8bit")
    msg.set_param("charset", "us-ascii")  # the label lies: the bytes are UTF-8
    [doc] = load(write_eml(tmp_path, msg))
    assert "Grüße aus Köln" in doc.text


@pytest.mark.parametrize("wire", [email.policy.default, email.policy.SMTPUTF8], ids=["encoded-words", "raw-utf8"])
def test_international_headers_and_file_names(tmp_path: Path, wire: email.policy.Policy) -> None:
    msg = message(subject="Grüße aus Köln", From="Jörg Müller <jm@example.de>")
    msg.add_attachment("Zahlen für März.", filename="Bericht März.txt")  # RFC 2231 on the wire
    msg.add_attachment("Outlook style.", filename="plain.txt")
    # Many mailers put an RFC 2047 encoded word in the parameter, against the RFC; read it all the same.
    msg.get_payload()[2].set_param("filename", "=?utf-8?q?Notiz_=C3=BCber_Zoll.txt?=", header="Content-Disposition")
    (tmp_path / "intl.eml").write_bytes(msg.as_bytes(policy=wire))
    parent, first, second = load(tmp_path / "intl.eml", [])
    assert (parent.title, parent.metadata["from_name"]) == ("Grüße aus Köln", "Jörg Müller")
    assert parent.metadata["attachments"] == ["Bericht März.txt", "Notiz über Zoll.txt"]
    assert first.doc_id.endswith("#1/Bericht März.txt") and "Zahlen für März." in first.text
    assert second.doc_id.endswith("#2/Notiz über Zoll.txt")


def test_malformed_headers_do_not_fail_the_message(tmp_path: Path) -> None:
    msg = message(From="<<@@>>, ,", To="undisclosed-recipients:;", Date="not a date at all")
    [doc] = load(write_eml(tmp_path, msg))
    assert "the numbers are in" in doc.text
    assert "date" not in doc.metadata and "to" not in doc.metadata


def test_message_without_body_or_readable_attachment_has_no_text_content(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match=r"^no text content$"):
        load(write_eml(tmp_path, message(body=None)))
    only_binary = message(body=None)
    only_binary.add_attachment(b"MZ\x90\x00 not text", maintype="application", subtype="octet-stream",
                               filename="tool.exe")
    with pytest.raises(LoaderError, match=r"^no text content$"):
        load(write_eml(tmp_path, only_binary), problems=[])


def test_not_an_email_is_refused_by_content(tmp_path: Path, pdf_bytes: bytes) -> None:
    (tmp_path / "fake.eml").write_bytes(pdf_bytes)
    with pytest.raises(LoaderError, match="binary file, not text"):
        load(tmp_path / "fake.eml")
    (tmp_path / "prose.eml").write_text("Just some prose, no headers here.\n")
    with pytest.raises(LoaderError, match="not an e-mail message"):
        load(tmp_path / "prose.eml")


# -- attachments ----------------------------------------------------------------------------------------


def test_pdf_attachment_is_a_child_document_of_the_message(tmp_path: Path, pdf_bytes: bytes) -> None:
    msg = message()
    msg.add_attachment(pdf_bytes, maintype="application", subtype="pdf", filename="findings.pdf")
    problems: list[tuple[str, str]] = []
    parent, child = load(write_eml(tmp_path, msg), problems)
    assert problems == []
    assert parent.doc_id == "docs/mail.eml" and parent.metadata["attachments"] == ["findings.pdf"]
    assert "Attachments: findings.pdf" in parent.text and "hairline" not in parent.text
    assert child.doc_id == "docs/mail.eml#1/findings.pdf" and child.source == "docs/mail.eml"
    assert child.metadata["parent_id"] == "docs/mail.eml" and child.metadata["format"] == "pdf"
    assert child.title.startswith("findings.pdf")
    assert "hairline cracks" in child.text and child.sections[0].page == 1


def test_attachment_only_message_is_indexed(tmp_path: Path) -> None:
    msg = message(body=None)
    msg.add_attachment("Minutes: the board approved the merger.", filename="minutes.txt")
    parent, child = load(write_eml(tmp_path, msg), [])
    assert parent.metadata["attachments"] == ["minutes.txt"]
    assert "approved the merger" in child.text and child.metadata["parent_id"] == parent.doc_id


def test_unsupported_attachment_is_listed_not_reported(tmp_path: Path) -> None:
    msg = message()
    msg.add_attachment(b"MZ\x90\x00binary", maintype="application", subtype="octet-stream", filename="tool.exe")
    msg.add_attachment(b"\x00\x01", maintype="application", subtype="octet-stream", filename="blob")
    problems: list[tuple[str, str]] = []
    [doc] = load(write_eml(tmp_path, msg), problems)
    assert problems == []  # nothing to fix in the file: a later ingest need not look at it again
    assert doc.metadata["attachments"] == ["tool.exe", "blob"]


def test_nameless_attachment_is_read_by_its_content_type(tmp_path: Path, pdf_bytes: bytes) -> None:
    msg = message()
    msg.add_attachment(pdf_bytes, maintype="application", subtype="pdf", disposition="attachment")
    parent, child = load(write_eml(tmp_path, msg), [])
    assert parent.metadata["attachments"] == ["attachment-1.pdf"]
    assert child.doc_id == "docs/mail.eml#1/attachment-1.pdf" and "hairline cracks" in child.text


def test_broken_attachment_is_reported_and_the_message_kept(tmp_path: Path) -> None:
    msg = message()
    msg.add_attachment(b"%PDF-1.7\n this is not really a PDF", maintype="application", subtype="pdf",
                       filename="report.pdf")
    path = write_eml(tmp_path, msg)
    problems: list[tuple[str, str]] = []
    [doc] = load(path, problems)
    assert "the numbers are in" in doc.text
    assert [label for label, _ in problems] == ["attachment report.pdf"]
    assert "\n" not in problems[0][1] and "mail.eml" not in problems[0][1]
    # Without a problems list a bad record fails the file, naming the attachment.
    with pytest.raises(LoaderError, match=r"^attachment report.pdf: "):
        load(path)


def test_attachments_share_the_unpacked_limit(tmp_path: Path) -> None:
    msg = message()
    for name in ("one.txt", "two.txt", "three.txt"):
        msg.add_attachment(f"{name} " + "lorem ipsum " * 400, filename=name)  # about 4.8 KB each
    problems: list[tuple[str, str]] = []
    docs = load(write_eml(tmp_path, msg), problems, limits=ParseLimits(max_unpacked_mb=0.01))  # 10 KiB
    assert [d.doc_id.rsplit("/", 1)[-1] for d in docs[1:]] == ["one.txt", "two.txt"]
    assert problems == [("attachment three.txt", "attachments unpack to more than ingest.max_unpacked_mb (0.01 MiB)")]


def test_forwarded_message_nests_with_its_own_attachment(tmp_path: Path, pdf_bytes: bytes) -> None:
    inner = message(subject="Original findings", body="See the PDF.", Message_ID="<inner@example.com>")
    inner.add_attachment(pdf_bytes, maintype="application", subtype="pdf", filename="findings.pdf")
    outer = message(subject="Fwd: Original findings", body="Forwarding this.")
    outer.add_attachment(inner)  # message/rfc822
    docs = load(write_eml(tmp_path, outer), [])
    by_id = {d.doc_id: d for d in docs}
    forwarded = by_id["docs/mail.eml#1/message.eml"]
    assert forwarded.metadata["parent_id"] == "docs/mail.eml" and "See the PDF." in forwarded.text
    assert forwarded.metadata["subject"] == "Original findings"
    pdf = by_id["docs/mail.eml#1/message.eml#1/findings.pdf"]
    assert pdf.metadata["parent_id"] == forwarded.doc_id and "hairline cracks" in pdf.text
    # An attachment of an attachment of ... stops at ingest.max_depth.
    problems: list[tuple[str, str]] = []
    shallow = load(write_eml(tmp_path, outer), problems, limits=ParseLimits(max_depth=1))
    assert [d.doc_id for d in shallow] == ["docs/mail.eml", "docs/mail.eml#1/message.eml"]
    assert problems == [("attachment findings.pdf", "nested more than 1 deep (ingest.max_depth)")]


# -- mailboxes ------------------------------------------------------------------------------------------


def write_mbox(path: Path, messages: list[EmailMessage]) -> Path:
    box = mailbox.mbox(path)
    try:
        for msg in messages:
            box.add(msg)
        box.flush()
    finally:
        box.close()
    return path


def test_mbox_gives_one_document_per_message(tmp_path: Path, pdf_bytes: bytes) -> None:
    first = message(subject="First", body="Alpha body.", Message_ID="<m1@example.com>")
    first.add_attachment(pdf_bytes, maintype="application", subtype="pdf", filename="findings.pdf")
    second = message(subject="Second", body="Beta body.", Message_ID="")
    third = message(subject="Third", body="Gamma body.", Message_ID="<m1@example.com>")  # a duplicate id
    path = write_mbox(tmp_path / "box.mbox", [first, second, third])
    docs = load(path, [])
    assert [(d.doc_id, d.title) for d in docs] == [
        ("docs/box.mbox#m1@example.com", "First"),
        ("docs/box.mbox#m1@example.com#1/findings.pdf", "findings.pdf"),
        ("docs/box.mbox#2", "Second"),
        ("docs/box.mbox#3", "Third"),
    ]
    assert docs[0].metadata["format"] == "mbox" and docs[0].metadata["from"] == "alice@example.com"
    assert docs[1].metadata["parent_id"] == docs[0].doc_id and "hairline cracks" in docs[1].text
    assert docs[3].text.endswith("Gamma body.")


def test_mbox_ids_are_stable_when_messages_are_appended(tmp_path: Path) -> None:
    path = write_mbox(tmp_path / "box.mbox", [message(subject=f"Note {n}", body=f"Body {n}.", Message_ID=f"<n{n}@x>")
                                             for n in range(3)])
    before = {d.doc_id: d.text for d in load(path, [])}
    write_mbox(path, [message(subject="Late", body="Appended.", Message_ID="<late@x>")])
    after = {d.doc_id: d.text for d in load(path, [])}
    assert len(after) == 4 and {k: after[k] for k in before} == before


def test_mbox_split_agrees_with_the_standard_library(tmp_path: Path) -> None:
    messages = [
        message(subject="One", body="From the start, a line began with From.\nSecond line.\n"),
        message(subject="Two", body="Nothing special.\n\n\n"),
        message(subject="Three", body=">>From stays as written.\n"),
    ]
    path = write_mbox(tmp_path / "box.mbox", messages)
    ours = [email.message_from_bytes(raw, policy=email.policy.default) for raw in split_mbox(path.read_bytes())]
    box = mailbox.mbox(path)
    try:
        theirs = [box.get_message(key) for key in box.keys()]  # noqa: SIM118 - iterating a Mailbox yields messages, not keys
        assert len(ours) == len(theirs) == 3
        for mine, stdlib in zip(ours, theirs):
            assert mine.items() == stdlib.items()
            # mailbox keeps the writer's ">From " quote; we take it off again.
            assert mine.get_payload() == re.sub(r"(?m)^>From ", "From ", stdlib.get_payload())
    finally:
        box.close()
    docs = load(path, [])
    assert "\nFrom the start, a line began with From." in docs[0].text
    assert docs[2].text.endswith(">>From stays as written.")


def test_mbox_reports_a_bad_message_and_keeps_the_others(tmp_path: Path) -> None:
    path = write_mbox(tmp_path / "box.mbox", [message(subject="Good", body="Kept."), message(subject=None, body=None,
                                                                                            From="", To="", Date="")])
    problems: list[tuple[str, str]] = []
    docs = load(path, problems)
    assert [d.title for d in docs] == ["Good"] and problems == [("message 2", "no text content")]
    with pytest.raises(LoaderError, match=r"^message 2: no text content$"):
        load(path)


def test_not_an_mbox_is_refused(tmp_path: Path) -> None:
    (tmp_path / "box.mbox").write_text("Subject: hi\n\nno From line\n")
    with pytest.raises(LoaderError, match="not an mbox file"):
        load(tmp_path / "box.mbox")


# -- end to end: attachments found, and deleted with their message --------------------------------------


@pytest.mark.slow
def test_attachment_is_searchable_and_deleted_with_its_message(make_engine, tmp_path: Path, pdf_bytes: bytes) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    msg = message(subject="Inspection results", body="Please read the attached inspection report.")
    msg.add_attachment(pdf_bytes, maintype="application", subtype="pdf", filename="findings.pdf")
    write_eml(folder, msg, "inspection.eml")
    (folder / "other.txt").write_text("Unrelated notes about the cafeteria menu.\n")
    engine = make_engine()
    report = engine.ingest([folder])
    assert report.failed == [] and sorted(report.added) == ["mail/inspection.eml", "mail/other.txt"]

    hit = engine.search("turbine blades hairline cracks", 1)[0]
    assert hit.chunk.doc_id == "mail/inspection.eml#1/findings.pdf"
    assert hit.chunk.metadata["parent_id"] == "mail/inspection.eml"
    assert hit.chunk.source == "mail/inspection.eml"
    assert engine.search("turbine", 5, filter="parent_id=mail/inspection.eml")[0].chunk.doc_id == hit.chunk.doc_id

    (folder / "inspection.eml").unlink()
    again = engine.ingest([folder])
    assert again.removed == ["mail/inspection.eml"]
    sources = {meta["doc_id"] for _, _, meta in engine.catalog.iter_chunks()}
    assert sources == {"mail/other.txt"}
    assert all("inspection" not in h.chunk.doc_id for h in engine.search("turbine blades hairline cracks", 5))


# -- the shipped parser contract ------------------------------------------------------------------------


class TestEmlContract(ParserContractTests):
    @pytest.fixture
    def parser(self):
        return ParserRegistry(plugins=False).get("eml")

    @pytest.fixture
    def sample(self, pdf_bytes: bytes):
        msg = message()
        msg.add_alternative("<p>The numbers are in.</p>", subtype="html")
        msg.add_attachment(pdf_bytes, maintype="application", subtype="pdf", filename="findings.pdf")
        return "report.eml", msg.as_bytes()


class TestMboxContract(ParserContractTests):
    @pytest.fixture
    def parser(self):
        return ParserRegistry(plugins=False).get("mbox")

    @pytest.fixture
    def sample(self, tmp_path: Path):
        path = write_mbox(tmp_path / "box.mbox", [message(subject=f"Note {n}", body=f"Body {n}.", Message_ID=f"<n{n}@x>")
                                                 for n in range(3)])
        return "box.mbox", path.read_bytes()

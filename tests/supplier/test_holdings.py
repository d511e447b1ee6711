"""Parsing holdings import files."""

from __future__ import annotations

from datetime import date

import pytest

from node.supplier.holdings import parse_csv, parse_marcxml, parse_status

CSV = """record_id,title,author,isbn,issn,oclc,lccn,barcode,call_number,location,status
rec-1,The Odyssey,Homer,0-14-044913-2;9780804429573,,(OCoLC)42,,B-1,883 HOM,Main,available
rec-1,The Odyssey,Homer,,,,,B-2,883 HOM c.2,Annex,On loan
rec-2,,,,,,,B-3,,Main,available
rec-3,Nature,,,0028-792X,,,B-4,,Stacks,lost property
rec-4,Emma,Austen,12345,,,,B-1,,Main,available
rec-5,Persuasion,Austen,,,,,B-5,,Main,
"""


def test_parse_csv_keeps_good_rows_and_reports_bad_ones():
    report = parse_csv(CSV)
    by_id = {r.record_id: r for r in report.records}
    assert set(by_id) == {"rec-1", "rec-5"}
    odyssey = by_id["rec-1"]
    assert odyssey.isbns == ("9780140449136", "9780804429573")
    assert odyssey.oclc == ("42",)
    assert [(i.barcode, i.location, i.status) for i in odyssey.items] == [
        ("B-1", "Main", "available"), ("B-2", "Annex", "on_loan")]
    assert by_id["rec-5"].items[0].status == "available"
    problems = dict(report.problems)
    assert "no title and no identifiers" in problems[4]
    assert "bad status 'lost property'" in problems[5]
    lines6 = [reason for line, reason in report.problems if line == 6]
    assert any("ISBN '12345' is not valid" in r for r in lines6)
    assert any("duplicate barcode 'B-1' (first seen at 2)" in r for r in lines6)
    assert report.item_count == 3


def test_parse_csv_column_mapping_and_separators():
    text = "Bib No\tTitle\tISBN\tItem Barcode\tStatus\tdue_date\n" \
           "9\tEmma\t9780140449136 | 080442957X\tX-1\ton_loan\t2026-04-01\n"
    report = parse_csv(text, columns={"record_id": "Bib No", "Item Barcode": "barcode"})
    assert report.problems == []
    (record,) = report.records
    assert record.record_id == "9"
    assert record.isbns == ("9780140449136", "9780804429573")
    assert record.items[0].barcode == "X-1"
    assert record.items[0].due_date == date(2026, 4, 1)
    with pytest.raises(ValueError, match="neither is one of"):
        parse_csv(text, columns={"Foo": "Bar"})


def test_parse_csv_multiline_cells_keep_line_numbers():
    text = 'record_id,title,barcode,status\nr1,"Two\nlines",A,available\nr2,Z,B,bogus\n'
    report = parse_csv(text)
    assert [r.record_id for r in report.records] == ["r1"]
    assert report.problems[0][0] == 4


def test_parse_csv_without_record_id_keys_by_identifier():
    report = parse_csv("title,isbn,barcode\nEmma,0-14-044913-2,A\n")
    assert report.records[0].record_id == "isbn:9780140449136"


def test_parse_csv_empty_and_headerless():
    assert parse_csv("").problems == [(1, "the file is empty")]
    problems = parse_csv("foo,bar\n1,2\n").problems
    assert problems[-1][1] == "no title or identifier column in the header"


def test_parse_status():
    assert parse_status("On Loan") == "on_loan"
    assert parse_status("non-circulating") == "non_circulating"
    assert parse_status("") == "available"
    assert parse_status("borrowed by a ghost") is None


MARC = b"""<?xml version="1.0" encoding="UTF-8"?>
<collection xmlns="http://www.loc.gov/MARC21/slim">
  <record>
    <leader>00000nam a2200000 a 4500</leader>
    <controlfield tag="001">991234</controlfield>
    <datafield tag="010" ind1=" " ind2=" "><subfield code="a">n 78-890351</subfield></datafield>
    <datafield tag="020"><subfield code="a">0140449132 (pbk.)</subfield></datafield>
    <datafield tag="020" ind1=" " ind2=" "><subfield code="z">0000000000</subfield></datafield>
    <datafield tag="035"><subfield code="a">(OCoLC)ocm00000042</subfield></datafield>
    <datafield tag="035" ind1=" " ind2=" "><subfield code="a">(DE-599)777</subfield></datafield>
    <datafield tag="100" ind1="0" ind2=" "><subfield code="a">Homer.</subfield></datafield>
    <datafield tag="245" ind1="1" ind2="4">
      <subfield code="a">The Odyssey :</subfield><subfield code="b">a new translation /</subfield>
      <subfield code="c">Homer.</subfield></datafield>
    <datafield tag="852" ind1=" " ind2=" ">
      <subfield code="b">Main</subfield><subfield code="h">883</subfield>
      <subfield code="i">HOM</subfield><subfield code="p">B-1</subfield></datafield>
    <datafield tag="852" ind1=" " ind2=" ">
      <subfield code="b">Annex</subfield><subfield code="h">883</subfield>
      <subfield code="p">B-2</subfield></datafield>
  </record>
  <record>
    <controlfield tag="001">992</controlfield>
    <datafield tag="022" ind1=" " ind2=" "><subfield code="a">0028-792X</subfield></datafield>
    <datafield tag="245" ind1="0" ind2="0"><subfield code="a">Nature.</subfield></datafield>
    <datafield tag="852" ind1=" " ind2=" "><subfield code="b">Periodicals</subfield>
      <subfield code="h">505 NAT</subfield></datafield>
    <datafield tag="876" ind1=" " ind2=" "><subfield code="p">N-1</subfield></datafield>
    <datafield tag="876" ind1=" " ind2=" "><subfield code="a">item-77</subfield></datafield>
  </record>
  <record>
    <controlfield tag="001">993</controlfield>
    <datafield tag="852" ind1=" " ind2=" "><subfield code="p">B-1</subfield></datafield>
  </record>
</collection>
"""


def test_parse_marcxml():
    report = parse_marcxml(MARC)
    by_id = {r.record_id: r for r in report.records}
    assert set(by_id) == {"991234", "992"}
    odyssey = by_id["991234"]
    assert odyssey.title == "The Odyssey : a new translation"
    assert odyssey.author == "Homer"
    assert odyssey.isbns == ("9780140449136",)
    assert odyssey.oclc == ("42",)
    assert odyssey.lccn == ("n78890351",)
    assert [(i.barcode, i.location, i.call_number) for i in odyssey.items] == [
        ("B-1", "Main", "883 HOM"), ("B-2", "Annex", "883")]
    nature = by_id["992"]
    assert nature.issns == ("0028792X",)
    assert [(i.barcode, i.location, i.call_number) for i in nature.items] == [
        ("N-1", "Periodicals", "505 NAT"), ("item-77", "Periodicals", "505 NAT")]
    assert report.problems == [(3, "no title and no identifiers (ISBN, ISSN, OCLC, LCCN); skipped")]


def test_parse_marcxml_without_namespace_single_record_and_mapping():
    data = b"""<record><controlfield tag="001">k1</controlfield>
      <datafield tag="245"><subfield code="a">Emma</subfield></datafield>
      <datafield tag="952"><subfield code="a">Branch</subfield><subfield code="o">823 AUS</subfield>
        <subfield code="p">K-1</subfield><subfield code="7">on loan</subfield></datafield>
      <datafield tag="952"><subfield code="a">Branch</subfield><subfield code="p">K-2</subfield>
        <subfield code="7">weird</subfield></datafield>
    </record>"""
    mapping = {"barcode": "952$p", "location": "952$a", "call_number": "952$o",
               "status": "952$7"}
    report = parse_marcxml(data, mapping)
    assert report.records == []
    assert "bad status 'weird' for item K-2" in report.problems[0][1]
    ok = parse_marcxml(data.replace(b"weird", b"available"), mapping)
    (record,) = ok.records
    assert [(i.barcode, i.location, i.call_number, i.status) for i in record.items] == [
        ("K-1", "Branch", "823 AUS", "on_loan"), ("K-2", "Branch", None, "available")]
    with pytest.raises(ValueError, match="unknown MARC mapping key"):
        parse_marcxml(data, {"colour": "999$a"})


def test_parse_marcxml_rejects_bad_xml_and_entities():
    assert "not well-formed" in parse_marcxml(b"<collection><record>").problems[0][1]
    evil = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]>
    <record><controlfield tag="001">x</controlfield>
    <datafield tag="245"><subfield code="a">&e;</subfield></datafield></record>"""
    report = parse_marcxml(evil)
    assert all("root:" not in (r.title or "") for r in report.records)

"""Our XSDs (xsd/) accept and reject exactly what the official ISO 18626 XSDs do.

The official schemas (../shared/iso18626/) are a test oracle only: they are
loaded here and nowhere else. Every check compares verdicts of the two
schemas of one version on the same document:

1. the shared samples (real implementers' messages, some invalid on purpose);
2. our fixtures (tests/protocol/data/<version>/), which the official schema
   must accept, so they cover all six message kinds in both versions;
3. thousands of single-step mutants of every valid document (mutations.py),
   checked against both versions, all disagreements reported at once;
4. the small public API of node.protocol.schema.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from lxml import etree

from node.protocol import schema as our_schema
from node.protocol.codes import NAMESPACE, Version
from tests.protocol import mutations

REPO = Path(__file__).resolve().parents[2]

OFFICIAL_DIR = REPO.parent / "shared" / "iso18626"
OFFICIAL_FILES = {
    Version.V1_2: OFFICIAL_DIR / "ISO-18626-v1_2.xsd",
    Version.V2021_2: OFFICIAL_DIR / "ISO-18626-2021-2.xsd",
}
SAMPLES_DIR = OFFICIAL_DIR / "samples"
DATA_DIR = Path(__file__).resolve().parent / "data"
FIXTURE_DIRS = {Version.V1_2: DATA_DIR / "1.2", Version.V2021_2: DATA_DIR / "2021-2"}
VERSIONS = list(Version)
XS = "{http://www.w3.org/2001/XMLSchema}"

MESSAGE_KINDS = frozenset(
    {
        "request",
        "requestConfirmation",
        "supplyingAgencyMessage",
        "supplyingAgencyMessageConfirmation",
        "requestingAgencyMessage",
        "requestingAgencyMessageConfirmation",
    }
)

needs_oracle = pytest.mark.skipif(
    not all(p.is_file() for p in OFFICIAL_FILES.values()),
    reason=f"official ISO 18626 schemas not found in {OFFICIAL_DIR}",
)

_parser = etree.XMLParser(resolve_entities=False, no_network=True)


def _parse(path: Path) -> etree._Element | None:
    try:
        return etree.parse(str(path), _parser).getroot()
    except etree.XMLSyntaxError:
        return None


def _sample_files() -> list[Path]:
    return sorted(SAMPLES_DIR.glob("*.xml")) if SAMPLES_DIR.is_dir() else []


def _fixture_files(version: Version) -> list[Path]:
    return sorted(FIXTURE_DIRS[version].glob("*.xml"))


_official_cache: dict[Version, etree.XMLSchema] = {}


def official(version: Version) -> etree.XMLSchema:
    if version not in _official_cache:
        _official_cache[version] = etree.XMLSchema(
            etree.parse(str(OFFICIAL_FILES[version]), _parser)
        )
    return _official_cache[version]


def ours(version: Version) -> etree.XMLSchema:
    return our_schema.schema_for(version)


def _first_error(schema: etree.XMLSchema) -> str:
    log = schema.error_log
    return log[0].message if len(log) else ""


def _kind(root: etree._Element) -> str | None:
    child = next(root.iterchildren(etree.Element), None)
    return etree.QName(child).localname if child is not None else None


# ---------------------------------------------------------------- structure


@needs_oracle
@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.value)
def test_same_global_elements(version: Version) -> None:
    """Same possible document roots (each global element can start a document)."""

    def globals_of(path: Path) -> set[str]:
        tree = etree.parse(str(path), _parser)
        return {e.get("name") for e in tree.getroot().iterchildren(f"{XS}element")}

    theirs = globals_of(OFFICIAL_FILES[version])
    mine = globals_of(our_schema.schema_path(version))
    assert mine == theirs


@needs_oracle
@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.value)
def test_our_schema_is_not_a_copy(version: Version) -> None:
    """Written, not copied: no official type name or annotation text in ours."""
    text = our_schema.schema_path(version).read_text(encoding="utf-8")
    assert "type_" not in text
    assert "Ed Davidson" not in text and "XMLPad" not in text
    assert "Change History" not in text


# ------------------------------------------------------------------ samples


@needs_oracle
@pytest.mark.parametrize("path", _sample_files(), ids=lambda p: p.stem)
def test_sample_verdicts_match(path: Path) -> None:
    root = _parse(path)
    if root is None:
        pytest.skip("not well-formed XML")
    for version in VERSIONS:
        theirs = official(version).validate(root)
        detail = _first_error(official(version))
        mine = ours(version).validate(root)
        assert mine == theirs, f"{version.value}: ours={mine} official={theirs} ({detail})"


@needs_oracle
def test_samples_mirror_the_2021_wire_break() -> None:
    """The v1.2-valid samples fail 2021-2 (bibliographicItemId order, header, ...)."""
    roots = [r for r in map(_parse, _sample_files()) if r is not None]
    valid_12 = [r for r in roots if official(Version.V1_2).validate(r)]
    assert len(valid_12) >= 10, "expected the shared samples to hold valid v1.2 messages"
    assert any(not official(Version.V1_2).validate(r) for r in roots), "expected invalid samples"
    for root in valid_12:
        assert ours(Version.V1_2).validate(root)
        assert not ours(Version.V2021_2).validate(root)


# ----------------------------------------------------------------- fixtures


def _fixture_params():
    return [
        pytest.param(version, path, id=f"{version.value}/{path.stem}")
        for version in VERSIONS
        for path in _fixture_files(version)
    ]


@needs_oracle
@pytest.mark.parametrize(("version", "path"), _fixture_params())
def test_fixture_is_valid_for_both_schemas(version: Version, path: Path) -> None:
    root = _parse(path)
    assert root is not None
    assert official(version).validate(root), f"fixture is not real: {official(version).error_log}"
    assert ours(version).validate(root), str(ours(version).error_log)


@needs_oracle
@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.value)
def test_all_six_message_kinds_have_valid_documents(version: Version) -> None:
    kinds = Counter()
    for root in _valid_documents(version):
        kinds[_kind(root)] += 1
    assert set(kinds) == MESSAGE_KINDS, kinds


@needs_oracle
@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.value)
def test_valid_documents_use_every_declared_element(version: Version) -> None:
    """The fixtures (plus samples) between them use every element the schema declares."""
    used = {
        etree.QName(el).localname
        for root in _valid_documents(version)
        for el in root.iter(etree.Element)
    }
    missing = _declared_element_names(version) - used
    assert not missing, f"no valid {version.value} document uses: {sorted(missing)}"


def _valid_documents(version: Version) -> list[etree._Element]:
    """Documents the official schema of ``version`` accepts: fixtures and samples."""
    found = []
    for path in _fixture_files(version) + _sample_files():
        root = _parse(path)
        if root is not None and official(version).validate(root):
            found.append(root)
    return found


def _declared_element_names(version: Version) -> set[str]:
    tree = etree.parse(str(OFFICIAL_FILES[version]), _parser)
    return {e.get("name") for e in tree.iter(f"{XS}element") if e.get("name")}


# ---------------------------------------------------------------- mutations

_mutant_cache: list[mutations.Mutant] = []
_verdict_cache: dict[Version, list[tuple[bool, bool]]] = {}


def _mutant_set() -> list[mutations.Mutant]:
    """Mutants of every distinct-shaped valid document of either version."""
    if not _mutant_cache:
        bases: dict[tuple, tuple[str, etree._Element]] = {}
        for version in VERSIONS:
            for path in _fixture_files(version) + _sample_files():
                root = _parse(path)
                if root is None or not official(version).validate(root):
                    continue
                bases.setdefault(mutations.shape(root), (f"{version.value}/{path.stem}", root))
        generated = (m for name, root in bases.values() for m in mutations.mutants(root, name))
        _mutant_cache.extend(mutations.unique(generated))
    return _mutant_cache


def _verdicts(version: Version) -> list[tuple[bool, bool]]:
    """(ours, official) for every mutant, computed once per version."""
    if version not in _verdict_cache:
        mine, theirs = ours(version), official(version)
        _verdict_cache[version] = [
            (mine.validate(m.root), theirs.validate(m.root)) for m in _mutant_set()
        ]
    return _verdict_cache[version]


@needs_oracle
@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.value)
def test_mutants_get_the_same_verdict(version: Version) -> None:
    disagreements = []
    for mutant, (mine, theirs) in zip(_mutant_set(), _verdicts(version)):
        if mine != theirs:
            official(version).validate(mutant.root)
            ours(version).validate(mutant.root)
            why = _first_error(official(version)) or _first_error(ours(version))
            disagreements.append(f"{mutant.id}: ours={mine} official={theirs}: {why}")
    assert not disagreements, (
        f"{len(disagreements)} of {len(_mutant_set())} mutants judged differently "
        f"({version.value}):\n" + "\n".join(disagreements)
    )


@needs_oracle
@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.value)
def test_mutant_set_is_not_vacuous(version: Version) -> None:
    verdicts = _verdicts(version)
    accepted = sum(1 for _, theirs in verdicts if theirs)
    rejected = len(verdicts) - accepted
    assert len(verdicts) >= 1000
    assert accepted >= 100, f"only {accepted} accepted mutants for {version.value}"
    assert rejected >= 100, f"only {rejected} rejected mutants for {version.value}"
    # every kind of mutation is represented
    kinds = Counter(m.id.split("|")[1].split("=")[0] for m in _mutant_set())
    for kind in (
        "delete",
        "duplicate",
        "swap-with-next",
        "as-root",
        "unqualified",
        "text",
        "unknown-first-child",
        "unknown-last-child",
        "scheme-added",
        "scheme-unprefixed",
        "version-unprefixed",
        "version-dropped",
        "xsi:type",
        "xsi:nil",
    ):
        assert kinds[kind] > 0, f"no {kind!r} mutants"


@needs_oracle
@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.value)
def test_mutants_touch_every_declared_element(version: Version) -> None:
    targeted = {m.target for m in _mutant_set()}
    missing = _declared_element_names(version) - targeted
    assert not missing, f"never mutated: {sorted(missing)}"


@needs_oracle
def test_mutants_survive_serialisation() -> None:
    """tobytes() gives the same document: fuzz tests can send the bytes."""
    theirs = official(Version.V1_2)
    verdicts = _verdicts(Version.V1_2)
    changed = [
        m.id
        for m, (_, verdict) in zip(_mutant_set(), verdicts)
        if theirs.validate(etree.fromstring(m.tobytes(), _parser)) != verdict
    ]
    assert not changed, "\n".join(changed)


_RETRY_BEFORE_AFTER = (
    '      <xs:element name="retryBefore" type="xs:dateTime" minOccurs="0"/>\n'
    '      <xs:element name="retryAfter" type="xs:dateTime" minOccurs="0"/>'
)

# A schema fault the mutant set must notice: (version, text in our XSD, replacement).
SEEDED_FAULTS = [
    (Version.V1_2, 'maxOccurs="3"', 'maxOccurs="4"'),
    (Version.V1_2, '<xs:enumeration value="Cancelled"/>', ""),
    (
        Version.V1_2,
        '<xs:element name="region" type="ill:CodeT"',
        '<xs:element name="region" type="xs:string"',
    ),
    (
        Version.V1_2,
        '<xs:element name="multipleItemRequestId" type="xs:string"/>\n',
        '<xs:element name="multipleItemRequestId" type="xs:string" minOccurs="0"/>\n',
    ),
    (Version.V1_2, 'attributeFormDefault="qualified"', 'attributeFormDefault="unqualified"'),
    (Version.V1_2, '\n  <xs:element name="timestampReceived" type="xs:dateTime"/>', ""),
    (Version.V1_2, '"sentToPatron" type="xs:boolean"', '"sentToPatron" type="ill:YesNoT"'),
    (Version.V1_2, '"monetaryValue" type="xs:decimal"', '"monetaryValue" type="xs:double"'),
    (
        Version.V1_2,
        '<xs:attribute name="scheme" type="xs:anyURI"/>',
        '<xs:attribute name="scheme" type="xs:string"/>',
    ),
    (Version.V2021_2, '<xs:minInclusive value="0"/>', '<xs:minInclusive value="1"/>'),
    (Version.V2021_2, _RETRY_BEFORE_AFTER, "\n".join(reversed(_RETRY_BEFORE_AFTER.split("\n")))),
    (
        Version.V2021_2,
        'type="ill:ErrorDataT" minOccurs="0" maxOccurs="unbounded"',
        'type="ill:ErrorDataT" minOccurs="0"',
    ),
    (Version.V2021_2, '<xs:element name="edition" type="xs:string"/>', ""),
    (
        Version.V2021_2,
        '<xs:element name="serviceInfo" type="ill:ServiceInfoT"/>',
        '<xs:element name="serviceInfo" type="ill:ServiceInfoT" minOccurs="0"/>',
    ),
    (Version.V2021_2, '<xs:enumeration value="Lost"/>', ""),
]


@needs_oracle
@pytest.mark.parametrize(
    ("version", "old", "new"),
    SEEDED_FAULTS,
    ids=[f"{v.value}:{i}" for i, (v, _, _) in enumerate(SEEDED_FAULTS)],
)
def test_mutant_set_detects_seeded_schema_fault(version: Version, old: str, new: str) -> None:
    """Mutation-test the test: a small wrong edit to our XSD must make some mutant disagree."""
    text = our_schema.schema_path(version).read_text(encoding="utf-8")
    assert old in text, f"seeded fault no longer applies: {old!r}"
    faulty = etree.XMLSchema(etree.fromstring(text.replace(old, new, 1).encode(), _parser))
    for mutant, (_, theirs) in zip(_mutant_set(), _verdicts(version)):
        if faulty.validate(mutant.root) != theirs:
            return
    pytest.fail(f"no mutant notices {old!r} -> {new!r}")


@needs_oracle
def test_mutants_include_known_hard_cases() -> None:
    """Spot checks that the set holds the cases the brief names, judged as expected."""
    by_id = {m.id: i for i, m in enumerate(_mutant_set())}

    def accepted(mutant_id: str, version: Version = Version.V1_2) -> bool:
        assert mutant_id in by_id, f"no mutant {mutant_id!r}"
        return _verdicts(version)[by_id[mutant_id]][1]

    base = "1.2/request-maximal"
    assert not accepted(f"{base}|version-unprefixed|ISO18626Message")
    assert not accepted(f"{base}|version-dropped|ISO18626Message")
    assert accepted(f"{base}|version-empty|ISO18626Message")
    assert not accepted(f"{base}|text='2026-01-01T00:00:00+0000'|request/header/timestamp")
    assert not accepted(f"{base}|text='2026-13-40T00:00:00Z'|request/header/timestamp")
    assert accepted(f"{base}|text='2026-01-01T00:00:00'|request/header/timestamp")
    assert not accepted(f"{base}|delete|request/header/multipleItemRequestId")
    assert accepted(f"{base}|text=''|request/header/multipleItemRequestId")
    assert not accepted(f"{base}|duplicate|request/header/timestamp")
    assert accepted(f"{base}|delete|request/serviceInfo")
    assert accepted(f"{base}|text='-1'|request/supplierInfo[1]/sortOrder")  # xs:integer in 1.2
    v21 = Version.V2021_2
    assert not accepted("2021-2/request-maximal|text='-1'|request/supplierInfo/sortOrder", v21)
    assert accepted("2021-2/request-maximal|text='-0'|request/supplierInfo/sortOrder", v21)
    assert not accepted("2021-2/request-maximal|delete|request/serviceInfo", v21)
    assert accepted("2021-2/request-maximal|delete|request/header/supplyingAgencyId", v21)
    assert accepted(
        "2021-2/sam-loaned|text='ReleaseHoldReturn'|supplyingAgencyMessage/statusInfo/status", v21
    )
    assert not accepted(
        "2021-2/sam-loaned|scheme-added|supplyingAgencyMessage/returnInfo/physicalAddress/region",
        v21,
    )
    assert accepted(
        "1.2/sam-loaned|scheme-added|supplyingAgencyMessage/returnInfo/physicalAddress/region"
    )
    assert not accepted(
        f"{base}|swap-with-next|request/bibliographicInfo/bibliographicItemId[1]/bibliographicItemIdentifier"
    )
    assert not accepted(f"{base}|scheme-unprefixed|request/header/supplyingAgencyId/agencyIdType")
    assert not accepted("1.2/sam-loaned|text='HoldReturn'|supplyingAgencyMessage/statusInfo/status")
    assert not accepted(
        "1.2/sam-loaned|text='yes'|supplyingAgencyMessage/deliveryInfo/sentToPatron"
    )
    assert accepted("1.2/sam-loaned|text='1'|supplyingAgencyMessage/deliveryInfo/sentToPatron")
    assert not accepted(
        "1.2/sam-loaned|text='1,50'|supplyingAgencyMessage/deliveryInfo/deliveryCosts/monetaryValue"
    )


# ------------------------------------------------------- validation_errors


def _doc(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())


_SAM = """<ISO18626Message xmlns="{ns}" xmlns:ill="{ns}" ill:version="{version}">
  <supplyingAgencyMessage>
    <header>
      <supplyingAgencyId><agencyIdType>ISIL</agencyIdType><agencyIdValue>S</agencyIdValue></supplyingAgencyId>
      <requestingAgencyId><agencyIdType>ISIL</agencyIdType><agencyIdValue>R</agencyIdValue></requestingAgencyId>
      {mirid}
      <timestamp>2026-03-01T10:00:00Z</timestamp>
      <requestingAgencyRequestId>r-1</requestingAgencyRequestId>
    </header>
    <messageInfo><reasonForMessage>StatusChange</reasonForMessage></messageInfo>
    <statusInfo>
      <status>{status}</status>
      <lastChange>2026-03-01T10:00:00Z</lastChange>
    </statusInfo>
  </supplyingAgencyMessage>
</ISO18626Message>"""


def _sam(version: Version, status: str) -> etree._Element:
    mirid = "<multipleItemRequestId/>" if version is Version.V1_2 else ""
    return _doc(_SAM.format(ns=NAMESPACE, version=version.value, status=status, mirid=mirid))


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.value)
def test_validation_errors_empty_for_valid_document(version: Version) -> None:
    assert our_schema.validation_errors(_sam(version, "Loaned"), version) == []


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.value)
def test_validation_errors_name_the_bad_element(version: Version) -> None:
    errors = our_schema.validation_errors(_sam(version, "Foo"), version)
    assert errors, "an unknown status must be rejected"
    assert errors[0].startswith("line 12: "), errors
    assert "'status'" in errors[0] and "'Foo'" in errors[0], errors
    assert "{" + NAMESPACE + "}" not in errors[0], "namespace is left out for brevity"


def test_validation_errors_version_specific() -> None:
    """HoldReturn is a status only from 2021 on."""
    assert our_schema.validation_errors(_sam(Version.V2021_2, "HoldReturn"), Version.V2021_2) == []
    errors = our_schema.validation_errors(_sam(Version.V1_2, "HoldReturn"), Version.V1_2)
    assert len(errors) == 1 and "HoldReturn" in errors[0]


def test_validation_errors_for_tree_built_in_memory() -> None:
    """Without source lines, the error says where by path instead."""

    def rebuild(el: etree._Element, parent: etree._Element | None = None) -> etree._Element:
        if parent is None:
            new = etree.Element(el.tag, attrib=dict(el.attrib), nsmap=el.nsmap)
        else:
            new = etree.SubElement(parent, el.tag, attrib=dict(el.attrib))
        new.text = el.text
        for child in el.iterchildren(etree.Element):
            rebuild(child, new)
        return new

    built = rebuild(_sam(Version.V1_2, "Loaned"))
    assert built.sourceline is None
    built.find(f".//{{{NAMESPACE}}}status").text = "Loanedd"
    errors = our_schema.validation_errors(built, Version.V1_2)
    assert len(errors) == 1, errors
    assert "'Loanedd'" in errors[0] and "status" in errors[0] and not errors[0].startswith("line")


def test_validation_errors_accepts_element_tree() -> None:
    tree = etree.ElementTree(_sam(Version.V1_2, "Loaned"))
    assert our_schema.validation_errors(tree, Version.V1_2) == []


def test_schema_for_is_cached_and_located_in_repo() -> None:
    assert our_schema.schema_for(Version.V1_2) is our_schema.schema_for(Version.V1_2)
    assert our_schema.schema_for(Version.V1_2) is not our_schema.schema_for(Version.V2021_2)
    assert our_schema.XSD_DIR == REPO / "xsd"
    for version in VERSIONS:
        assert our_schema.schema_path(version).is_file()


def test_schema_module_imports_no_io_frameworks() -> None:
    code = (
        "import sys, node.protocol.schema; "
        "bad = [m for m in ('aiohttp', 'sqlalchemy', 'asyncio') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr

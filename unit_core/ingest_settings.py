"""Typed settings of each ingest kind: the ``ingest:`` section of a preset and the flags of ``unit ingest <kind>``.

One model per kind, told apart by ``kind`` (a pydantic discriminated union,
:data:`IngestSettings`). Each model is the one definition of its options: name, type,
default, constraint, help text and command-line form. ``preprocessing.cli`` builds each
kind's argparse flags from these fields, ``preprocessing.run.run_ingest`` runs a validated
object, and the pipeline's ingest stage passes ``UnitConfig.ingest`` to it: a typo or a bad
value in a preset is a configuration error at load time, naming the key.

The command-line form of a field is in its ``json_schema_extra["cli"]`` (see :func:`option`):
the flag (default ``--`` + the field name with ``-`` for ``_``), positional, repeated
(``--class a --class b``), several values (``--domains day night``), or not an option at all.
:func:`legacy_args` reads the same table to translate the old ``ingest.args`` lists of
command-line strings (see ``unit_core.config``).

The defaults that the ingestion functions share with these settings (sizes, limits) are
defined here and imported by ``preprocessing``, so that each has one definition: this module
sits below ``preprocessing`` in the layers and must not import it. Defaults that belong to
the head detector (crop size, margin, calibrated threshold, shipped templates) are left unset
(None) here and taken from ``preprocessing`` when the ingest runs; ``--help`` shows them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, model_validator

#: The paper's street-scene resolution (width, height).
STREET_SIZE = (640, 480)
CELEBA_SIZE = 128
DIGITS_SIZE = 28
MAX_PIXELS = 64_000_000
MAX_FILE_MB = 256
S3_ATTEMPTS = 10
MAX_ARCHIVE_FILES = 2_000_000
MAX_ARCHIVE_GB = 200
#: Demo (synthetic) data sets: the renderers' domains and the sizes they accept.
StreetDomain = Literal["day", "night", "rain", "snow"]
MapDomain = Literal["satellite", "map"]
DEMO_MIN_SIZE, DEMO_MAX_SIZE = 16, 4096


def option(default: Any = ..., help: str = "", *, flag: str | None = None, positional: bool = False,
           metavar: str | None = None, repeat: bool = False, several: bool = False, path: bool = False,
           group: str | None = None, cli: bool = True, **constraints: Any) -> Any:
    """A settings field and its command-line form.

    ``flag``: the option's name (default ``--field-name``; for a bool defaulting to True, the flag
    that turns it off, e.g. ``--no-reuse``); ``positional``: an argument without a flag;
    ``repeat``: the flag is given once per value; ``several``: one flag, one or more values;
    ``path``: names a local input file or folder (checked by ``missing_inputs``); ``group``:
    the help section; ``cli=False``: a setting of presets only.
    """
    form = {"flag": flag, "positional": positional, "metavar": metavar, "repeat": repeat, "several": several,
            "path": path, "group": group}
    extra = {"cli": {key: value for key, value in form.items() if value} if cli else None}
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def parse_size(value: Any) -> Any:
    """``"640x480"`` -> (640, 480); ``"128"`` or 128 -> (128, 128); a [width, height] list -> a tuple."""
    if isinstance(value, str):
        width, _, height = value.strip().lower().partition("x")
        if not width.isdigit() or not (height or width).isdigit():
            raise ValueError(f"expected WIDTHxHEIGHT or N (positive integers), got {value!r}")
        return int(width), int(height or width)
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, list):
        return tuple(value)
    return value


def _domain_locations(value: Any) -> Any:
    """``["day=photos/day", ...]`` (the command line's ``--domain NAME=LOCATION``) -> ``{"day": "photos/day"}``."""
    if not isinstance(value, (list, tuple)):
        return value
    locations: dict[str, str] = {}
    for text in value:
        name, separator, location = str(text).partition("=")
        if not separator or not name or not location:
            raise ValueError(f"expected NAME=LOCATION (folder, archive or s3://bucket/prefix), got {text!r}")
        if name in locations:
            raise ValueError(f"domain {name!r} is given twice")
        locations[name] = location
    return locations


def _pad_or_auto(value: Any) -> Any:
    return None if value == "auto" else value


Size = Annotated[tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]], BeforeValidator(parse_size)]
DemoSize = Annotated[tuple[Annotated[int, Field(ge=DEMO_MIN_SIZE, le=DEMO_MAX_SIZE)],
                           Annotated[int, Field(ge=DEMO_MIN_SIZE, le=DEMO_MAX_SIZE)]], BeforeValidator(parse_size)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
Locations = Annotated[dict[str, Annotated[str, Field(min_length=1)]], BeforeValidator(_domain_locations)]
TEST_FRACTION_HELP = "share of each domain put in test, chosen by content hash"
OUTPUT, S3, ARCHIVES = "output and processing", "S3 (credentials from the standard AWS chain)", "archives"


class IngestKind(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: str = option(cli=False)  # each kind's model narrows it to its name
    requires: str = option("", "what a user must provide for this data set; shown when ingest fails", cli=False)

    def missing_inputs(self) -> list[str]:
        """The local files and folders these settings name (not s3://) that do not exist here."""
        missing = []
        for name, field in type(self).model_fields.items():
            if not (cli_form(field) or {}).get("path"):
                continue
            value = getattr(self, name)
            for location in (value.values() if isinstance(value, dict) else [value]):
                if location and not str(location).startswith("s3://") and not Path(location).exists():
                    missing.append(str(location))
        return missing


class RawIngest(IngestKind):
    """Options every ingest of raw data shares: output format, parallelism, limits, S3 and archive access."""

    format: Literal["png", "jpg"] = option("png", "image format of the output", group=OUTPUT)
    workers: int | None = option(None, "worker processes (default: one per core)", group=OUTPUT, ge=1)
    max_pixels: int = option(MAX_PIXELS, "reject larger images", group=OUTPUT, ge=1)
    max_file_mb: int = option(MAX_FILE_MB, "skip larger input files", group=OUTPUT, ge=1)
    allow_upscale: bool = option(False, "enlarge images smaller than the target instead of rejecting them", group=OUTPUT)
    reuse: bool = option(True, "reuse unchanged files of the previous output (--no-reuse: rebuild every file)",
                         flag="--no-reuse", group=OUTPUT)
    progress: bool = option(True, "show a progress bar", flag="--no-progress", group=OUTPUT)
    endpoint_url: str | None = option(None, "S3-compatible endpoint, e.g. http://127.0.0.1:9000", group=S3)
    region: str | None = option(None, "AWS region", group=S3)
    s3_attempts: int = option(S3_ATTEMPTS, "attempts per request (retries)", group=S3, ge=1)
    max_archive_files: int = option(MAX_ARCHIVE_FILES, "refuse archives with more files", group=ARCHIVES, ge=1)
    max_archive_gb: int = option(MAX_ARCHIVE_GB, "refuse archives that expand to more", group=ARCHIVES, ge=1)


class FoldersIngest(RawIngest):
    """one domain per folder, archive or S3 prefix (any images)"""

    kind: Literal["folders"] = option("folders", cli=False)
    domains: Locations = option(help="domain name -> folder, archive or s3:// prefix; on the command line, repeat per domain",
                                flag="--domain", metavar="NAME=LOCATION", repeat=True, path=True, min_length=1)
    size: Size | None = option(None, "resize keeping the aspect ratio, then centre-crop (default: keep the size)", metavar="WxH")
    test_fraction: Fraction = option(0.0, TEST_FRACTION_HELP)


class StreetIngest(FoldersIngest):
    """street scenes: one domain per location, resized and centre-cropped to 640x480"""

    kind: Literal["street"] = option("street", cli=False)  # type: ignore[assignment]
    size: Size = option(STREET_SIZE, "resize keeping the aspect ratio, then centre-crop", metavar="WxH")  # type: ignore[assignment]


class CycleganIngest(RawIngest):
    """a CycleGAN-layout data set (trainA/ trainB/ testA/ testB/)"""

    kind: Literal["cyclegan"] = option("cyclegan", cli=False)
    location: str = option(help="folder, archive or s3:// prefix holding trainA/ etc.", positional=True, path=True)
    domain_a: str = option("A", "domain name for trainA/testA", min_length=1)
    domain_b: str = option("B", "domain name for trainB/testB", min_length=1)
    size: Size | None = option(None, "resize and centre-crop (default: keep)", metavar="WxH")


class CelebaIngest(RawIngest):
    """CelebA split by one attribute: with it (domain A) and without it (domain B)"""

    kind: Literal["celeba"] = option("celeba", cli=False)
    images: str = option(help="img_align_celeba folder, archive or s3:// prefix", positional=True, path=True)
    attributes: str = option(help="list_attr_celeba.txt", path=True)
    attribute: str = option(help="attribute name, e.g. Blond_Hair, Smiling, Goatee, Eyeglasses", min_length=1)
    partition: str | None = option(None, "list_eval_partition.txt (0 train, 1 validation, 2 test)", path=True)
    validation_split: Literal["train", "test"] = option("test", "where validation images go")
    size: int = option(CELEBA_SIZE, "side of the square output", ge=1)
    domain_a: str | None = option(None, "name of the domain with the attribute (default: attribute in lower case)")
    domain_b: str | None = option(None, "name of the domain without it (default: not_<attribute>)")
    test_fraction: Fraction = option(0.0, "without partition: share put in test")
    min_images: int = option(1, "fewest training images a domain may get", ge=1)


class AnimalsIngest(RawIngest):
    """ImageNet dog breeds / cat species: head crops by template matching"""

    kind: Literal["animals"] = option("animals", cli=False)
    location: str = option(help="ImageNet-layout folder (n02110185/... or n02110185_*.JPEG), archive or s3:// prefix",
                           positional=True, path=True)
    templates: str | None = option(None, "folder of head templates: dog/, cat/, big_cat/ crops and background.npz "
                                         "(default: the shipped templates/heads)", path=True)
    classes: tuple[Annotated[str, Field(min_length=1)], ...] = option(
        help="preset (dogs, cats), preset class (e.g. siberian_husky), a WordNet ID, or name=wnid[,wnid...]; "
             "on the command line, repeat", flag="--class", metavar="SPEC", repeat=True, min_length=1)
    # Unset (None): the head detector's own defaults (preprocessing.animals / head_detector), shown by --help.
    size: int | None = option(None, "side of the square head crop", ge=1)
    margin: float | None = option(None, "share of the head box added per side", ge=0.0)
    threshold: float | None = option(None, "minimum match score, in background standard deviations; "
                                           "the default is the detector's, calibrated by bench/head_detection.py")
    cat_face_threshold: float | None = option(None, "cat classes: lowest score of OpenCV's cat-face cascade for its face "
                                                    "to be the head (else the templates decide); the default is the detector's")
    min_crop: int | None = option(None, "smallest crop side accepted, in source pixels (default size/2)", ge=1)
    test_fraction: Fraction = option(0.0, "share of each class put in test, by content hash")
    boxes: str | None = option(None, "CSV file,x0,y0,x1,y1 of head boxes that replace detection for the listed files", path=True)
    drop: str | None = option(None, "text file of file names to leave out, one per line", path=True)
    min_images: int = option(1, "fewest training images a class may get", ge=1)


class DigitsIngest(RawIngest):
    """MNIST (idx files) and/or USPS (HDF5) for domain adaptation, labels kept"""

    kind: Literal["digits"] = option("digits", cli=False)
    mnist: str | None = option(None, "folder with train-images-idx3-ubyte[.gz] etc.", path=True)
    usps: str | None = option(None, "usps.h5 (train/data, train/target, test/...)", path=True)
    size: int = option(DIGITS_SIZE, "common side, usually 28 or 32", ge=1)
    limit: int | None = option(None, "first N images of each split only", ge=1)
    usps_pad: Annotated[int | None, BeforeValidator(_pad_or_auto)] = option(
        None, "black pixels added per side of the 16x16 USPS digits before resizing, so their scale matches MNIST's; "
              "auto (default): the pad whose mean digit is closest to MNIST's mean digit, reported",
        metavar="PIXELS|auto", ge=0)

    @model_validator(mode="after")
    def _a_source(self) -> "DigitsIngest":
        if self.mnist is None and self.usps is None:
            raise ValueError("give mnist (--mnist), usps (--usps) or both")
        return self


class PairsIngest(RawIngest):
    """aligned pairs into the test_paired split (side by side A|B, or two folders)"""

    kind: Literal["pairs"] = option("pairs", cli=False)
    side_by_side: str | None = option(None, "folder/archive/prefix of A|B images (pix2pix format)", path=True)
    folder_a: str | None = option(None, "folder of domain A images (matched to --b by file name)", flag="--a", path=True)
    folder_b: str | None = option(None, "folder of domain B images", flag="--b", path=True)
    domain_a: str = option("A", "name of domain A", min_length=1)
    domain_b: str = option("B", "name of domain B", min_length=1)
    a_side: Literal["left", "right"] = option("left", "which half is A in side-by-side images")
    size: Size | None = option(None, "resize each member (default: keep)", metavar="WxH")

    @model_validator(mode="after")
    def _one_source(self) -> "PairsIngest":
        if (self.side_by_side is None) == (self.folder_a is None and self.folder_b is None):
            raise ValueError("give either side_by_side (--side-by-side) or folder_a and folder_b (--a, --b)")
        if self.side_by_side is None and (self.folder_a is None or self.folder_b is None):
            raise ValueError("folder_a (--a) and folder_b (--b) go together")
        return self


class DemoIngest(IngestKind):
    train: int = option(200, "train images per domain", metavar="N", ge=0)
    test: int = option(20, "paired test scenes", metavar="N", ge=0)
    val: int = option(0, "paired validation scenes (split val_paired; settings are chosen there, not on the test scenes)",
                      metavar="N", ge=0)
    size: DemoSize = option((128, 128), f"image size in pixels, {DEMO_MIN_SIZE} to {DEMO_MAX_SIZE}", metavar="N|WxH")
    seed: int = option(0, "seed of the whole data set", metavar="N", ge=0)

    @model_validator(mode="after")
    def _something_and_distinct(self) -> "DemoIngest":
        if self.train + self.test == 0:
            raise ValueError("train and test are both 0: nothing to generate")
        domains = self.domains  # type: ignore[attr-defined]  # each demo kind's own Literal domains
        if len(set(domains)) != len(domains) or len(domains) < 2:
            raise ValueError(f"domains {' '.join(domains)}: give at least two different domains")
        return self


class DemoStreetIngest(DemoIngest):
    """generate a procedural day/night/rain/snow street data set (no download)"""

    kind: Literal["demo-street"] = option("demo-street", cli=False)
    domains: tuple[StreetDomain, ...] = option(("day", "night"), "two or more of day, night, rain, snow",
                                               metavar="DOMAIN", several=True)


class DemoMapsIngest(DemoIngest):
    """generate a procedural satellite/map data set (no download)"""

    kind: Literal["demo-maps"] = option("demo-maps", cli=False)
    domains: tuple[MapDomain, ...] = option(("satellite", "map"), "two or more of satellite, map",
                                            metavar="DOMAIN", several=True)


KIND_MODELS: dict[str, type[IngestKind]] = {
    model.model_fields["kind"].default: model
    for model in (DemoStreetIngest, DemoMapsIngest, FoldersIngest, StreetIngest, CycleganIngest, CelebaIngest,
                  AnimalsIngest, DigitsIngest, PairsIngest)
}
INGEST_KINDS = tuple(KIND_MODELS)
IngestSettings = Annotated[
    DemoStreetIngest | DemoMapsIngest | FoldersIngest | StreetIngest | CycleganIngest | CelebaIngest | AnimalsIngest
    | DigitsIngest | PairsIngest,
    Field(discriminator="kind"),
]
INGEST_ADAPTER: TypeAdapter[Any] = TypeAdapter(IngestSettings)


def cli_form(field: Any) -> dict[str, Any] | None:
    """The command-line form of a model field (:func:`option`), None for a preset-only setting."""
    return (field.json_schema_extra or {}).get("cli")


def flag_of(name: str, field: Any) -> str:
    form = cli_form(field) or {}
    return form.get("flag") or "--" + name.replace("_", "-")


def choices_of(annotation: Any) -> tuple[str, ...] | None:
    """The allowed values of a Literal field (or of the items of a tuple of Literals)."""
    if get_origin(annotation) is tuple:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is Literal:
        return tuple(get_args(annotation))
    return None


def legacy_args(kind: str, argv: Sequence[str]) -> dict[str, Any]:
    """The settings written by the old ``ingest.args`` (the strings of ``unit ingest <kind> ...`` before ``--out``).

    Reads the flag table of the kind's model; values stay strings and are validated by the model.
    ``--flag=value`` and unique prefixes of flags are accepted, as argparse did.
    """
    if kind not in KIND_MODELS:
        raise ValueError(f"unknown ingest kind {kind!r}; expected one of {', '.join(INGEST_KINDS)}")
    fields = {name: field for name, field in KIND_MODELS[kind].model_fields.items() if cli_form(field) is not None}
    flags = {flag_of(name, field): name for name, field in fields.items() if not cli_form(field).get("positional")}
    positionals = [name for name, field in fields.items() if cli_form(field).get("positional")]
    settings: dict[str, Any] = {}
    tokens = [str(token) for token in argv]
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not token.startswith("--"):
            if not positionals:
                raise ValueError(f"'unit ingest {kind}' takes no argument {token!r}")
            settings[positionals.pop(0)] = token
            continue
        written, has_value, inline = token.partition("=")
        matches = [flag for flag in flags if flag == written] or [flag for flag in flags if flag.startswith(written)]
        if len(matches) != 1:
            listed = ", ".join(matches or sorted(flags))
            raise ValueError(f"{'ambiguous' if matches else 'unknown'} option {written!r} of 'unit ingest {kind}' "
                             f"({'matches' if matches else 'options'}: {listed})")
        name = flags[matches[0]]
        field = fields[name]
        form = cli_form(field)
        if field.annotation is bool:
            settings[name] = not field.default  # store_true / the --no-... flag of a True default
            continue
        if form.get("several"):
            values = [inline] if has_value else []
            while index < len(tokens) and not tokens[index].startswith("--"):
                values.append(tokens[index])
                index += 1
            settings[name] = values
            continue
        if has_value:
            value = inline
        elif index < len(tokens):
            value, index = tokens[index], index + 1
        else:
            raise ValueError(f"option {written!r} of 'unit ingest {kind}' needs a value")
        if form.get("repeat"):
            settings.setdefault(name, []).append(value)
        else:
            settings[name] = value
    return settings


def settings_yaml(settings: dict[str, Any]) -> str:
    """One line of YAML flow style for a deprecation message: ``{kind: digits, mnist: data/raw, size: '32'}``."""
    def text(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(text(item) for item in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{key}: {text(item)}" for key, item in value.items()) + "}"
        value = str(value)
        return value if re.fullmatch(r"[\w./@:+-]+", value) and not value.startswith(("-", "@")) else repr(value)
    return text(settings)

"""CelebA attribute splits: domain A = faces with the attribute (1), domain B = without (-1).

``list_attr_celeba.txt`` is parsed as the real file is: CRLF line endings, a first line with the
count of the full data set (which need not match the rows present), a header of 40 names with
a trailing space, then ``<file> <40 values of 1/-1>`` padded with double spaces.

Users often hold the full attribute file and a part of the images: rows without an image are
counted (with a sample of names) in report.json's notes, not listed as rejections. A malformed
row (a truncated last line, say) is skipped and reported unless its image is present, which
is an error naming the line. A domain left with fewer than ``min_images`` training images is
an error naming it, before anything is written.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from preprocessing.errors import IngestError
from preprocessing.images import size_transform
from preprocessing.output import DatasetWriter, check_domain_names, recipe_hash
from preprocessing.pipeline import (
    ImageJob,
    IngestOptions,
    IngestSummary,
    open_images,
    output_names,
    reject_skipped,
    run_jobs,
    summary_of,
    write_outcomes,
)
from unit_core.ingest_settings import CELEBA_SIZE

#: Attributes used in the UNIT paper's face experiments.
PAPER_ATTRIBUTES = ("Blond_Hair", "Smiling", "Goatee", "Eyeglasses")
#: Side of the square output: the centred square of the 178x218 aligned faces, resized.
DEFAULT_SIZE = CELEBA_SIZE


@dataclass(frozen=True)
class CelebaAttributes:
    names: tuple[str, ...]
    values: dict[str, tuple[int, ...]]  # image file name -> one 1/-1 per name
    lines: dict[str, int]  # image file name -> line number in the file
    declared_count: int
    malformed: dict[str, tuple[int, str]]  # image file name of a bad row -> (line number, what is wrong)


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not a text file: {exc}") from None
    return text.splitlines()  # handles CRLF and LF alike


def parse_attributes(path: str | Path) -> CelebaAttributes:
    """Parse ``list_attr_celeba.txt``; bad header lines and repeated rows raise naming the file and line.

    A malformed row is kept aside in ``malformed``; the ingest decides whether it matters.
    """
    path = Path(path)
    lines = _lines(path)
    if len(lines) < 2:
        raise IngestError(f"{path}: expected a count line and a header line, got {len(lines)} line(s)")
    try:
        declared_count = int(lines[0].strip())
    except ValueError:
        raise IngestError(f"{path}: line 1: expected the image count, got {lines[0][:40]!r}") from None
    names = tuple(lines[1].split())
    if not names or len(set(names)) != len(names):
        raise IngestError(f"{path}: line 2: expected distinct attribute names, got {lines[1][:80]!r}")
    values: dict[str, tuple[int, ...]] = {}
    line_numbers: dict[str, int] = {}
    malformed: dict[str, tuple[int, str]] = {}
    for number, line in enumerate(lines[2:], 3):
        fields = line.split()
        if not fields:
            continue
        image, raw = fields[0], fields[1:]
        if image in values or image in malformed:
            first = line_numbers[image] if image in values else malformed[image][0]
            raise IngestError(f"{path}: line {number}: {image} already listed on line {first}")
        if len(raw) != len(names):
            malformed[image] = (number, f"expected a file name and {len(names)} values, got {len(raw)}")
        elif any(value not in ("1", "-1") for value in raw):
            malformed[image] = (number, f"values must be 1 or -1, got {' '.join(sorted(set(raw) - {'1', '-1'}))}")
        else:
            values[image] = tuple(int(value) for value in raw)
            line_numbers[image] = number
    return CelebaAttributes(names, values, line_numbers, declared_count, malformed)


def parse_partition(path: str | Path) -> dict[str, int]:
    """Parse ``list_eval_partition.txt``: ``<file> <0 train | 1 validation | 2 test>`` per line."""
    path = Path(path)
    partition: dict[str, int] = {}
    for number, line in enumerate(_lines(path), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise IngestError(f"{path}: line {number}: expected '<file> <0|1|2>', got {line[:60]!r}")
        partition[fields[0]] = int(fields[1])
    return partition


def resolve_attribute(name: str, names: tuple[str, ...], source: Path) -> str:
    """The attribute as spelled in the file (case-insensitive match); unknown names list the valid ones."""
    matches = [candidate for candidate in names if candidate.lower() == name.lower()]
    if not matches:
        raise IngestError(f"{source}: unknown attribute {name!r}; valid attributes: {', '.join(names)}")
    return matches[0]


def ingest_celeba(
    images: str,
    attributes_file: str | Path,
    out_dir: str | Path,
    *,
    attribute: str,
    partition_file: str | Path | None = None,
    validation_split: str = "test",
    size: int = DEFAULT_SIZE,
    domain_a: str | None = None,
    domain_b: str | None = None,
    test_fraction: float = 0.0,
    min_images: int = 1,
    options: IngestOptions = IngestOptions(),
) -> IngestSummary:
    """CelebA faces split by one attribute into two domains.

    ``images``: folder, archive (``img_align_celeba.zip``) or S3 prefix. With ``partition_file``
    the official split is used (validation goes to ``validation_split``: "train" or "test"),
    otherwise ``test_fraction`` of each domain goes to test, chosen by content hash.
    Rows without an image are counted and images without a row rejected, neither fatal; each
    domain needs ``min_images`` training images.
    """
    if validation_split not in ("train", "test"):
        raise IngestError(f"validation_split must be 'train' or 'test', got {validation_split!r}")
    attributes_file = Path(attributes_file)
    table = parse_attributes(attributes_file)
    attribute = resolve_attribute(attribute, table.names, attributes_file)
    column = table.names.index(attribute)
    partition = parse_partition(partition_file) if partition_file is not None else None
    domains = {1: domain_a or attribute.lower(), -1: domain_b or f"not_{attribute.lower()}"}
    if domains[1] == domains[-1]:
        raise IngestError(f"domain names must differ, both are {domains[1]!r}")
    check_domain_names(domains.values())
    out_dir = Path(out_dir)
    size_pair = (size, size)
    transform = size_transform(size_pair, options.allow_upscale)
    recipe = recipe_hash(
        {"transform": "cover_resize", "size": list(size_pair), "allow_upscale": options.allow_upscale, "image_format": options.image_format}
    )
    parameters = {
        "images": images,
        "attributes_file": str(attributes_file),
        "partition_file": str(partition_file) if partition_file is not None else None,
        "attribute": attribute,
        "domains": {"with": domains[1], "without": domains[-1]},
        "validation_split": validation_split,
        "size": size,
        "test_fraction": test_fraction,
        "allow_upscale": options.allow_upscale,
    }
    splits = {0: "train", 1: validation_split, 2: "test"}
    with ExitStack() as stack, DatasetWriter(
        out_dir, options.image_format, options.reuse_previous, kind="celeba", parameters=parameters
    ) as writer:
        writer.note("attribute_rows", {"declared": table.declared_count, "present": len(table.values)})
        listing = open_images(stack, images, out_dir, options)
        reject_skipped(writer, listing)
        found: set[str] = set()
        candidates = []
        for file in listing.files:
            image_name = PurePosixPath(file.relative).name
            found.add(image_name)
            if image_name in table.malformed:
                number, problem = table.malformed[image_name]
                raise IngestError(f"{attributes_file}: line {number}: {problem} (the row of {file.source}, which is present)")
            if image_name not in table.values:
                writer.reject(file.source, f"no row for {image_name} in {attributes_file.name}")
                continue
            split = None
            if partition is not None:
                if image_name not in partition:
                    writer.reject(file.source, f"no row for {image_name} in {Path(partition_file).name}")
                    continue
                split = splits[partition[image_name]]
            candidates.append((file, image_name, split))
        without_image = sorted(set(table.values) - found)
        writer.note("rows_without_image", {"count": len(without_image), "first": without_image[:10]})
        if table.malformed:
            writer.note("malformed_rows_skipped", {"count": len(table.malformed), "first": [
                f"line {number}: {problem}" for number, problem in sorted(table.malformed.values())[:10]]})
        if not candidates:
            raise IngestError(f"{images}: none of the {len(listing.files)} image files has a row in {attributes_file}")
        names = output_names([image_name for _, image_name, _ in candidates])
        jobs = [
            ImageJob(file, domains[table.values[image_name][column]], name, transform, recipe, split=split)
            for (file, image_name, split), name in zip(candidates, names)
        ]
        write_outcomes(writer, run_jobs(jobs, writer, options, test_fraction=test_fraction, description="celeba"))
        for domain in domains.values():
            count = writer.counts.get(domain, {}).get("train", 0)
            if count < min_images:
                value = "1" if domain == domains[1] else "-1"
                raise IngestError(f"domain {domain!r} ({attribute} = {value}) gets {count} training image(s) of the "
                                  f"{len(candidates)} images with a row, at least {min_images} needed; nothing was written")
    details = [f"{len(without_image)} row(s) of {attributes_file.name} have no image in {images} (see report.json notes)"]
    return summary_of(writer, details if without_image else [])

"""The files of a folder of scans: listing them, refusing other formats, their fingerprint.

A build lists the files its dataset reads (`list_files`), refuses a folder
that also holds scans in a format it does not read (`check_no_other_scans`),
and names the build by the files' `fingerprint`, so that a changed folder is
built again.
"""

from collections.abc import Sequence
import os

from hyperrecon_jax.data import config_fields
from hyperrecon_jax.data import data_errors


def list_files(root: str, suffixes: Sequence[str]) -> list[str]:
  """Sorted paths (relative to `root`) of files ending in one of `suffixes`.

  The search is recursive and follows linked folders (a site's scans linked
  in from elsewhere), each real folder once, so a link to a folder already
  searched (or to one above it) adds nothing. Hidden files and folders (a
  name that starts with '.': ``.Trash-1000``, ``.snapshot``, an editor's
  backups) are not searched: they hold old copies, not subjects; nor is
  ``lost+found``.

  Raises:
    DataError: a matching name is a symbolic link to nothing (its target
      moved or deleted), named with its target; names end in one of
      ``suffixes`` in another case (``A.NII``), which the readers and
      writers do not take: they would be left out of the build; a folder
      cannot be listed (its volumes would be left out, and another user
      would get other splits); or a matching path is not valid UTF-8, which
      the dataset's ``name`` feature cannot store.
  """

  def unlisted(err):
    raise data_errors.DataError(
        f"{err.filename} cannot be searched ({err.strerror}): the volumes in it "
        "would be left out of the dataset; make it readable (or move it out of "
        f"{root})") from err

  found, other_case, undecodable = [], [], []
  searched = set()
  for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in searched:
      dirnames[:] = []
      continue
    searched.add(real)
    # lost+found (a file system's root, readable by root alone) holds no subject.
    dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "lost+found")
    for fname in filenames:
      if fname.endswith(tuple(suffixes)) and not fname.startswith("."):
        path = os.path.join(dirpath, fname)
        if os.path.islink(path) and not os.path.exists(path):
          raise data_errors.DataError(
              f"{path} is a symbolic link to {os.readlink(path)!r}, which does not "
              "exist (moved or deleted?): restore it, or remove the link")
        rel = os.path.relpath(path, root)
        try:
          rel.encode("utf-8")
        except UnicodeEncodeError:  # os.walk decodes other bytes as surrogates
          undecodable.append(ascii(os.fsencode(rel))[1:])
        found.append(rel)
      elif fname.lower().endswith(tuple(suffixes)) and not fname.startswith("."):
        other_case.append(os.path.relpath(os.path.join(dirpath, fname), root))
  if undecodable:
    raise data_errors.DataError(
        f"{root} holds {first_few(sorted(undecodable))}, whose path is not valid "
        "UTF-8 (the dataset stores each volume's name as text): rename them")
  if other_case:
    raise data_errors.DataError(
        f"{root} holds {first_few(sorted(other_case))}, whose suffix is not in lower "
        f"case ({', '.join(suffixes)}): rename them, or they are left out")
  return sorted(found)


def first_few(names: Sequence[str]) -> str:
  """The first three of ``names`` and how many more, for a message."""
  return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


# Scans in formats that the folders' readers do not take: left out of a
# folder's build, they would shrink it without a word. DICOM is not among
# them: BIDS keeps a scan's DICOM files in `sourcedata/` beside its NIfTI.
OTHER_SCAN_FORMATS = {
    ".mgz": "FreeSurfer", ".mgh": "FreeSurfer", ".nrrd": "NRRD", ".nhdr": "NRRD",
    ".mha": "MetaImage", ".mhd": "MetaImage", ".hdr": "Analyze", ".img": "Analyze",
    ".h5": "HDF5, fastMRI's", ".nii.gz": "NIfTI", ".nii": "NIfTI",
}


def check_no_other_scans(root: str, dataset: str, reads: Sequence[str]) -> None:
  """Refuses a folder that holds scans in a format its dataset does not read.

  Args:
    root: the folder.
    dataset: its dataset's name, for the message.
    reads: the suffixes the dataset reads (the rest of `OTHER_SCAN_FORMATS`
      are looked for).

  Raises:
    DataError: naming the first files of other formats and their formats.
  """
  suffixes = [s for s in OTHER_SCAN_FORMATS if s not in reads]
  others = list_files(root, suffixes)
  if others:
    formats = sorted({OTHER_SCAN_FORMATS[next(s for s in suffixes if p.endswith(s))]
                      for p in others})
    raise data_errors.DataError(
        f"{dataset}: {root!r} holds {first_few(others)}, scans of another format "
        f"({', '.join(formats)}) than the {', '.join(reads)} files that {dataset} reads: they "
        "would be left out of the dataset. Convert them, or move them out of the folder.")


def fingerprint(root: str, relpaths: Sequence[str]) -> str:
  """Hash of the files' names, sizes, modification and inode change times.

  Cheap (no file is read), and it changes when a file is added, removed or
  rewritten, also in place at the same size (an uncompressed volume
  processed again) and with its modification time set back (``touch -r``,
  ``os.utime``): the change time moves on every write and cannot be set. A
  copy, or a change of the file's mode or owner, builds the dataset again,
  which costs time but no correctness.
  """
  entries = []
  for p in relpaths:
    info = os.stat(os.path.join(root, p))
    entries.append((p, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
  return config_fields.digest({"files": entries})

"""The index on disk, split as Lucene splits Directory, SegmentInfos,
IndexWriter and IndexReader:

- ``safefs``: opening files msearch did not write (index files and the
  user's), without being tricked by them;
- ``disk``: folders opened by descriptor, ``.npy`` files read as untrusted
  input, checksums, durable writes;
- ``layout``: the names of an index's files and folders, the fix hint, and
  which folder an index searches;
- ``record``: the commit record (``meta.json``): model, settings, segments
  and file table, checked;
- ``ownership``: the marker, the writer lock, new folders, the commit and
  cleanup;
- ``segment``: one segment's files, written once and read mapped;
- ``reader``: a committed generation opened and checked.
"""

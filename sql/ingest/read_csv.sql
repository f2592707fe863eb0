-- Reading: the records of one CSV landing file ($path, glob-escaped) as staging rows, every
-- column as text ($column_types: each header name as VARCHAR). DuckDB's parallel reader
-- keeps the records it rejects (ragged rows, bad quoting, invalid UTF-8) in _csv_rejects: the
-- ingest then re-reads such a file with Python's csv module, record by record.
--
-- _row is left NULL: a record's number is its position (rowid) counted from the file's first
-- row, which readers.staging_source adds back. One copy of the text, no numbering pass.
-- Template: columns is the feed's columns (NULL for one the header lacks).

select
    $file as _file,
    null::bigint as _row,
    null::varchar as _error,
    null::varchar as _error_code,
    null::varchar as _raw,
    {{ columns }}
from read_csv(
    $path,
    columns = $column_types,
    header = true,
    auto_detect = false,
    delim = ',',
    quote = '"',
    escape = '"',
    strict_mode = true,
    store_rejects = true,
    rejects_table = '_csv_rejects',
    rejects_scan = '_csv_scans',
    ignore_errors = true,
    max_line_size = $max_line_size
)

-- Reading: the records of one Parquet landing file ($path, glob-escaped) as staging rows,
-- numbered by their position in the file. Template: columns is the feed's columns as text
-- (NULL for one the file lacks).

select
    $file as _file,
    file_row_number + 1 as _row,
    null::varchar as _error,
    null::varchar as _error_code,
    null::varchar as _raw,
    {{ columns }}
from read_parquet($path, file_row_number = true)

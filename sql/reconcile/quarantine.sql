-- Quarantined rows per landing file, counted in the lake (temp view rc_quarantine_rows).

select
    landing_date,
    feed,
    file,
    count(*) as n
from rc_quarantine_rows
group by all

-- A month's first close: every billed partner's bill is version 1 and supersedes nothing.

select
    *,
    1::integer as version,
    null::varchar as supersedes_invoice_no
from bill_partners
order by partner_id

-- The lines of the current (closed) version of every bill: the internal view the page's
-- By Product and By Customer views read (sql/expenditure_by_product.sql and
-- sql/expenditure_by_customer.sql).

select l.*
from bill_lines as l
inner join bills as b
    on
        l.partner_id = b.partner_id
        and l.bill_month = b.bill_month
        and l.version = b.version
where b.status = 'closed'

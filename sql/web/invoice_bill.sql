-- The bill version an invoice number names.

select * from bills
where partner_id = $partner_id and invoice_no = $invoice_no

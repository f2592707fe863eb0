-- One export of a partner.

select * from export_history
where partner_id = $partner_id and export_id = $export_id

-- One customer of a partner's month (By Customer's View More).

select * from expenditure_by_customer
where partner_id = $partner_id and bill_month = $month and customer_id = $customer_id

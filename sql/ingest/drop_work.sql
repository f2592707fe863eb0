-- The work tables of one feed, once its rows are written and counted.
-- Template: staged is the feed's typed table (typ_<feed>), checked and
-- resolved, accepted its checked, resolved and accepted rows.

drop view if exists checked;
drop table if exists rejected;
drop table if exists duplicates;
drop table if exists repeated;
delete from history;
drop table if exists {{ checked }};
drop table if exists {{ resolved }};
drop table if exists {{ accepted }};
drop table if exists {{ staged }};
drop table if exists {{ staged }}_bases;
drop table if exists usage_prices;

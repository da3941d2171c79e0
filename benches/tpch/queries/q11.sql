-- TPC-H Q11: important stock identification (FRACTION = 0.0001 / scale factor)
select ps_partkey, sum(ps_supplycost * ps_availqty) as value
from mesh.supply.partsupp, mesh.supply.supplier, mesh.customer.nation
where ps_suppkey = s_suppkey
  and s_nationkey = n_nationkey
  and n_name = 'GERMANY'
group by ps_partkey
having sum(ps_supplycost * ps_availqty) > (
  select sum(ps_supplycost * ps_availqty) * ${FRACTION}
  from mesh.supply.partsupp, mesh.supply.supplier, mesh.customer.nation
  where ps_suppkey = s_suppkey
    and s_nationkey = n_nationkey
    and n_name = 'GERMANY')
order by value desc, ps_partkey

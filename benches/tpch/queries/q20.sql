-- TPC-H Q20: potential part promotion
select s_name, s_address
from mesh.supply.supplier, mesh.customer.nation
where s_suppkey in (
    select ps_suppkey from mesh.supply.partsupp
    where ps_partkey in (select p_partkey from mesh.supply.part where p_name like 'forest%')
      and ps_availqty > (
        select 0.5 * sum(l_quantity) from mesh."order".lineitem
        where l_partkey = ps_partkey
          and l_suppkey = ps_suppkey
          and l_shipdate >= date '1994-01-01'
          and l_shipdate < date '1995-01-01'))
  and s_nationkey = n_nationkey
  and n_name = 'CANADA'
order by s_name

//! Documents that use much of the standards — including deprecated and vendor-specific forms —
//! validate and load: fields meshql does not use are kept in `raw`, never an error.

use std::path::Path;

use meshql_contract::validate::{validate, Standard};
use meshql_contract::{DataContract, DataProduct, LogicalType};

const CONTRACT: &str = r##"
apiVersion: v3.1.0
kind: DataContract
id: 53581432-6c55-4ba2-a65f-72344a91553a
name: seller_payments_v1
version: 1.1.0
status: active
tenant: ClimateQuantumInc
domain: seller
dataProduct: payments
tags: [finance, payments]
description:
  purpose: Views built on top of the seller tables.
  limitations: Data based on seller perspective, no buyer information
  usage: Predict sales over time
  authoritativeDefinitions:
    - type: privacy-statement
      url: https://example.com/gdpr.pdf
servers:
  - server: my-postgres
    type: postgres
    host: localhost
    port: 5432
    database: pypl-edw
    schema: pp_access_views
  - server: lake
    type: s3
    environment: prod
    location: s3://bucket/payments/
    format: delta
    customProperties:
      - property: deltaVersion
        value: 12
schema:
  - name: tbl
    physicalName: tbl_1
    physicalType: table
    businessName: Core Payment Metrics
    description: Provides core payment metrics
    dataGranularityDescription: Aggregation on columns txn_ref_dt, pmt_txn_id
    authoritativeDefinitions:
      - url: https://catalog.example.com/search?q=tbl
        type: businessDefinition
    tags: [tbl]
    properties:
      - name: txn_ref_dt
        primaryKey: false
        primaryKeyPosition: -1
        businessName: transaction reference date
        logicalType: date
        physicalType: date
        description: Reference date for transaction
        partitioned: true
        partitionKeyPosition: 1
        criticalDataElement: false
        tags: []
        classification: public
        transformSourceObjects: [table_name_1, table_name_2]
        transformLogic: sel t1.txn_dt as txn_ref_dt from table_name_1 as t1
        examples: ["2022-10-03", "2020-01-28"]
        customProperties:
          - property: anonymizationStrategy
            value: none
      - name: rcvr_id
        primaryKey: true
        primaryKeyPosition: 1
        logicalType: string
        physicalType: varchar(18)
        required: false
        unique: false
        classification: restricted
        encryptedName: enc_rcvr_id
        relationships:
          - to: seller.rcvr_id
            type: foreignKey
      - name: rcvr_cntry_code
        logicalType: string
        physicalType: varchar(2)
        required: false
        classification: public
        quality:
          - metric: nullValues
            mustBe: 0
            description: column should not contain null values
            dimension: completeness
            severity: error
            businessImpact: operational
          - type: sql
            query: SELECT COUNT(*) FROM ${object} WHERE ${property} IS NOT NULL
            mustBeLessThan: 3600
      - name: amounts
        logicalType: array
        items:
          logicalType: number
      - name: address
        logicalType: object
        properties:
          - name: street
            logicalType: string
    quality:
      - metric: rowCount
        mustBeBetween: [100, 120]
      - type: text
        description: The table should contain recent data.
      - type: custom
        engine: soda
        implementation: "type: duplicate_percent"
price:
  priceAmount: 9.95
  priceCurrency: USD
  priceUnit: megabyte
team:
  - username: ceastwood
    role: Data Scientist
    dateIn: "2022-08-02"
    dateOut: "2022-10-01"
    replacedByUsername: mhopper
roles:
  - role: microstrategy_user_opr
    access: read
    firstLevelApprovers: Reporting Manager
slaDefaultElement: tab1.txn_ref_dt
slaProperties:
  - property: latency
    value: 4
    unit: d
    element: tab1.txn_ref_dt
  - property: retention
    value: 3
    unit: y
  - property: generalAvailability
    value: "2022-05-12T09:30:10-08:00"
support:
  - channel: "#product-help"
    tool: slack
    url: https://aidaug.slack.com/archives/C05UZRSBKLY
  - channel: datacontract-ann
    tool: email
    url: mailto:datacontract-ann@bitol.io
customProperties:
  - property: refRulesetName
    value: gcsc.ruleset.name
contractCreatedTs: "2022-11-15T02:59:43+00:00"
"##;

const PRODUCT: &str = r##"
apiVersion: v1.0.0
kind: DataProduct
id: fbe8d147-28db-4f1d-bedf-a3fe9f458427
name: Customer Data Product
version: v1.0.0
status: draft
domain: seller
tenant: ClimateQuantumInc
authoritativeDefinitions:
  - type: businessDefinition
    url: https://example.com/dp/my-technical-name
description:
  purpose: Enterprise view of a customer.
  limitations: No known limitations.
  usage: Check the various artefacts for their own description.
customProperties:
  - property: somePropertyName
    value: property.value
tags: [customer]
inputPorts:
  - name: payments
    version: 1.0.0
    contractId: dbb7b1eb-7628-436e-8914-2a00638ba6db
outputPorts:
  - name: rawtransactions
    description: Raw Transactions
    type: tables
    version: 1.0.0
    contractId: c2798941-1b7e-4b03-9e0d-955b1a872b32
    sbom:
      - type: external
        url: https://sbom.example.com/dp/cdp
    inputContracts:
      - id: dbb7b1eb-7628-436e-8914-2a00638ba6db
        version: 2.0.0
managementPorts:
  - name: tableau-dashboard
    content: dashboard
    type: topic
    url: https://tableau.example.com/dashboard
support:
  - channel: channel-name-or-identifier
    tool: slack
    url: https://slack.example.com
team:
  name: my-team
  description: The team owning the data product.
  members:
    - username: ceastwood
      name: Clint Eastwood
      description: Product owner
      role: owner
      dateIn: "2022-08-02"
productCreatedTs: "2022-11-15T02:59:43+00:00"
"##;

fn yaml(text: &str) -> serde_json::Value {
    serde_yaml::from_str(text).expect("YAML")
}

#[test]
fn a_rich_contract_validates_and_loads() {
    let doc = yaml(CONTRACT);
    validate(Standard::Odcs, Path::new("rich.odcs.yaml"), &doc).expect("validates");
    let c: DataContract = serde_json::from_value(doc).expect("loads");
    assert_eq!(c.servers.len(), 2);
    assert_eq!(c.servers[1].location.as_deref(), Some("s3://bucket/payments/"));
    let props = &c.schema[0].properties;
    assert_eq!(props.len(), 5);
    assert_eq!(props[0].logical_type, Some(LogicalType::Date));
    assert!(props[1].primary_key);
    assert_eq!(props[2].quality.len(), 2);
    assert_eq!(props[4].properties.len(), 1);
    assert_eq!(c.support.len(), 2);
    assert_eq!(c.sla_properties.len(), 3);
}

#[test]
fn a_rich_product_validates_and_loads() {
    let doc = yaml(PRODUCT);
    validate(Standard::Odps, Path::new("rich.odps.yaml"), &doc).expect("validates");
    let p: DataProduct = serde_json::from_value(doc).expect("loads");
    assert_eq!(p.owner(), Some("my-team"));
    assert_eq!(
        p.output_ports[0].contract_id.as_deref(),
        Some("c2798941-1b7e-4b03-9e0d-955b1a872b32")
    );
    assert_eq!(p.input_ports.len(), 1);
}

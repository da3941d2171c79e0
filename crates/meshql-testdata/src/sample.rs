//! The rows of the sample e-commerce mesh, generated from a seed.
//!
//! Everything is a pure function of [`SEED`], so tests can compute expected answers from these
//! rows directly — independently of any reader — and anyone can rebuild the data byte-for-byte in
//! content. Dates are days since 1970-01-01, timestamps microseconds since the epoch (UTC),
//! money is in cents (stored as `decimal(…, 2)`).

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The seed of the sample mesh.
pub const SEED: u64 = 42;

/// 2024-03-01 as days since the epoch: the first order day.
pub const FIRST_ORDER_DAY: i32 = 19783;
/// Number of order days (March 2024).
pub const ORDER_DAYS: i32 = 31;

pub const REGIONS: [(&str, &[&str]); 4] = [
    ("EU", &["NL", "DE", "FR", "ES"]),
    ("NA", &["US", "CA"]),
    ("APAC", &["JP", "SG", "AU"]),
    ("LATAM", &["BR", "MX"]),
];
pub const CATEGORIES: [&str; 5] = ["books", "electronics", "home", "toys", "sports"];
pub const WAREHOUSES: [&str; 3] = ["AMS", "NYC", "SIN"];
pub const CARRIERS: [&str; 3] = ["DHL", "UPS", "FedEx"];
pub const CHANNELS: [&str; 3] = ["email", "social", "search"];
pub const ORDER_CHANNELS: [&str; 3] = ["web", "app", "store"];

const FIRST: [&str; 12] = [
    "Ada", "Bram", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana", "Ines", "Jonas", "Kemal", "Lena",
];
const LAST: [&str; 10] = [
    "Jansen", "Müller", "Dubois", "García", "Smith", "Tanaka", "Silva", "Kowalski", "Okafor", "Nguyen",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub customer_id: i64,
    pub full_name: String,
    pub email: String,
    pub phone: String,
    pub birth_date: i32,
    pub region: String,
    pub country: String,
    pub segment: String,
    pub signup_ts: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub product_id: i64,
    pub sku: String,
    pub name: String,
    pub category: String,
    pub unit_price_cents: i64,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    pub product_id: i64,
    pub warehouse: String,
    pub quantity: i32,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub order_id: i64,
    pub customer_id: i64,
    pub product_id: i64,
    pub quantity: i32,
    pub unit_price_cents: i64,
    pub amount_cents: i64,
    pub channel: String,
    pub order_date: i32,
    pub order_ts: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Shipment {
    pub order_id: i64,
    pub carrier: String,
    pub status: String,
    pub shipped_date: Option<i32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CampaignDay {
    pub campaign_id: String,
    pub channel: String,
    pub day: i32,
    pub impressions: i64,
    pub clicks: i64,
    pub conversions: i64,
    pub spend_cents: i64,
}

/// The whole sample mesh's rows.
#[derive(Debug, Clone)]
pub struct Sample {
    pub customers: Vec<Customer>,
    pub products: Vec<Product>,
    pub inventory: Vec<Inventory>,
    pub orders: Vec<Order>,
    pub shipments: Vec<Shipment>,
    pub campaigns: Vec<CampaignDay>,
}

/// How many products are in the first Delta commit of `product.catalog` (the rest come in the
/// second).
pub const PRODUCTS_FIRST_COMMIT: usize = 40;
/// How many orders have shipments in the first Delta commit of `order.shipments`.
pub const SHIPMENTS_FIRST_COMMIT: usize = 1500;

impl Sample {
    /// Generates the sample from [`SEED`].
    pub fn generate() -> Sample {
        Self::with_seed(SEED)
    }

    pub fn with_seed(seed: u64) -> Sample {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let customers = (1..=200)
            .map(|id| {
                let first = FIRST.choose(&mut rng).copied().unwrap_or("Ada");
                let last = LAST.choose(&mut rng).copied().unwrap_or("Jansen");
                let (region, countries) = REGIONS[rng.random_range(0..REGIONS.len())];
                let country = countries[rng.random_range(0..countries.len())];
                Customer {
                    customer_id: id,
                    full_name: format!("{first} {last}"),
                    email: format!("{}.{}{id}@example.com", first.to_lowercase(), ascii(last)),
                    phone: format!(
                        "+{:02}-{:03}-{:04}",
                        rng.random_range(10..99),
                        rng.random_range(100..999),
                        rng.random_range(0..10000)
                    ),
                    // 1950-01-01 .. 2005-12-31
                    birth_date: rng.random_range(-7305..13148),
                    region: region.to_string(),
                    country: country.to_string(),
                    segment: if rng.random_bool(0.2) { "business" } else { "consumer" }.to_string(),
                    // 2020-01-01 + up to four years, whole seconds
                    signup_ts: (1_577_836_800 + rng.random_range(0..126_230_400i64)) * 1_000_000,
                }
            })
            .collect();
        let products: Vec<Product> = (1..=50)
            .map(|id| {
                let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
                Product {
                    product_id: id,
                    sku: format!("SKU-{id:04}"),
                    name: format!("{} item {id}", capitalize(category)),
                    category: category.to_string(),
                    unit_price_cents: rng.random_range(199..25_000),
                    active: rng.random_bool(0.9),
                }
            })
            .collect();
        let inventory = WAREHOUSES
            .iter()
            .flat_map(|w| products.iter().map(move |p| (w, p.product_id)))
            .map(|(w, product_id)| Inventory {
                product_id,
                warehouse: w.to_string(),
                quantity: rng.random_range(0..500),
                updated_at: (1_709_251_200 + rng.random_range(0..2_678_400i64)) * 1_000_000,
            })
            .collect();
        let orders: Vec<Order> = (1..=2000)
            .map(|order_id| {
                let product_id = rng.random_range(1..=50i64);
                let unit_price_cents = products[(product_id - 1) as usize].unit_price_cents;
                let quantity = rng.random_range(1..=5);
                let order_date = FIRST_ORDER_DAY + rng.random_range(0..ORDER_DAYS);
                Order {
                    order_id,
                    customer_id: rng.random_range(1..=200),
                    product_id,
                    quantity,
                    unit_price_cents,
                    amount_cents: unit_price_cents * i64::from(quantity),
                    channel: ORDER_CHANNELS[rng.random_range(0..ORDER_CHANNELS.len())].to_string(),
                    order_date,
                    order_ts: (i64::from(order_date) * 86_400 + rng.random_range(0..86_400i64)) * 1_000_000,
                }
            })
            .collect();
        let shipments = orders
            .iter()
            .map(|o| {
                let status = ["pending", "shipped", "delivered", "delivered", "returned"][rng.random_range(0..5)];
                Shipment {
                    order_id: o.order_id,
                    carrier: CARRIERS[rng.random_range(0..CARRIERS.len())].to_string(),
                    status: status.to_string(),
                    shipped_date: (status != "pending").then(|| o.order_date + rng.random_range(0..4)),
                }
            })
            .collect();
        let mut campaigns = Vec::new();
        for c in 1..=6 {
            let channel = CHANNELS[(c - 1) % CHANNELS.len()];
            for d in 0..ORDER_DAYS {
                let impressions = rng.random_range(1_000..50_000i64);
                let clicks = impressions * rng.random_range(1..80i64) / 1000;
                let conversions = clicks * rng.random_range(0..120i64) / 1000;
                campaigns.push(CampaignDay {
                    campaign_id: format!("CMP-{c:02}"),
                    channel: channel.to_string(),
                    day: FIRST_ORDER_DAY + d,
                    impressions,
                    clicks,
                    conversions,
                    spend_cents: rng.random_range(5_000..500_000),
                });
            }
        }
        Sample {
            customers,
            products,
            inventory,
            orders,
            shipments,
            campaigns,
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'ü' => 'u',
            'í' => 'i',
            'ç' => 'c',
            c if c.is_ascii_alphanumeric() => c.to_ascii_lowercase(),
            _ => 'x',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        let a = Sample::generate();
        let b = Sample::generate();
        assert_eq!(a.customers, b.customers);
        assert_eq!(a.orders, b.orders);
        assert_eq!(a.campaigns, b.campaigns);
        assert_eq!(a.orders.len(), 2000);
        assert!(a
            .orders
            .iter()
            .all(|o| o.order_date >= FIRST_ORDER_DAY && o.order_date < FIRST_ORDER_DAY + ORDER_DAYS));
    }
}

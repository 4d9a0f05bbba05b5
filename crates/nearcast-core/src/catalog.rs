//! The compiled marketer configuration: stores with their geofence index and time zones,
//! offers indexed by store. Rebuilt whenever the configuration changes, then shared
//! read-only by every decision.

use crate::FieldError;
use crate::campaign::Campaign;
use crate::config::{CapPolicy, Offer, Store};
use crate::geofence::{DEFAULT_RESOLUTION, GeofenceIndex, Shape};
use crate::ids::Id;
use chrono_tz::Tz;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// Stores, offers and the cap policy, compiled for lookups.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Stores in index order.
    pub stores: Vec<Store>,
    /// Each store's time zone.
    pub tzs: Vec<Tz>,
    /// Offers.
    pub offers: Vec<Offer>,
    /// Category -> positions of the offers running at every store of it (ascending).
    /// Shared by the category's stores: one list per store cost 100k stores × ~170 offers
    /// × 4 bytes (68 MB) on a national network.
    category_offers: Vec<Vec<u32>>,
    /// Store position -> its category's position in `category_offers`.
    store_category: Vec<u32>,
    /// Offers naming stores by id: store position -> range in `own_offers` (a store's
    /// offers are `own_offers[own_start[p]..own_start[p + 1]]`, ascending).
    own_start: Vec<u32>,
    own_offers: Vec<u32>,
    /// The geofence index; fence positions are store positions.
    pub index: GeofenceIndex,
    /// Store id -> position.
    pub store_pos: HashMap<Id, u32>,
    /// Offer id -> position.
    pub offer_pos: HashMap<Id, u32>,
    /// Caps and quiet hours.
    pub policy: CapPolicy,
    /// Defined campaigns.
    pub campaigns: Vec<Campaign>,
    /// Offer position -> its campaign's position in `campaigns`, if defined.
    offer_campaign: Vec<Option<u32>>,
    /// Campaign id -> the holdout share of its offers: the defined campaign's, else the
    /// largest among the campaign's offers (one share per campaign, as the draw is).
    holdouts: HashMap<Id, f64>,
    /// Campaigns whose budget this host found spent since this catalog was built (a
    /// commit refused a send). Shared by the catalog's clones; a new catalog (a campaign
    /// changed, perhaps its budget raised) starts with none.
    pub spent: Arc<RwLock<HashSet<Id>>>,
    /// Campaigns whose coupon pool this host found empty since this catalog was built (an
    /// upload makes a new catalog).
    pub coupons_out: Arc<RwLock<HashSet<Id>>>,
    /// Store position -> its parsed opening hours (stores that have them).
    hours: HashMap<u32, Arc<opening_hours::OpeningHours>>,
    /// The configuration version: the id of the audit entry of the last change this
    /// catalog includes, when known. Every decision records it.
    pub version: Option<String>,
}

impl Catalog {
    /// Validates and compiles.
    ///
    /// # Errors
    /// The first invalid store or offer, with its path (`stores[3].fence.radius_m`), or an
    /// offer naming a store that does not exist.
    pub fn build(
        stores: Vec<Store>,
        offers: Vec<Offer>,
        policy: CapPolicy,
    ) -> Result<Self, FieldError> {
        policy.validate().map_err(|e| e.within("policy"))?;
        let mut shapes = Vec::with_capacity(stores.len());
        let mut tzs = Vec::with_capacity(stores.len());
        let mut store_pos = HashMap::with_capacity(stores.len());
        for (i, s) in stores.iter().enumerate() {
            let at = format!("stores[{i}]");
            s.validate().map_err(|e| e.within(&at))?;
            if store_pos.insert(s.id.clone(), i as u32).is_some() {
                return Err(FieldError::new(
                    format!("{at}.id"),
                    format!("duplicate store id {:?}", s.id.as_str()),
                ));
            }
            shapes.push(
                Shape::from_fence(&s.fence)
                    .map_err(|e| e.within(&format!("{at}.fence.geometry")))?,
            );
            tzs.push(
                crate::config::parse_tz(&s.time_zone)
                    .map_err(|e| e.within(&format!("{at}.time_zone")))?,
            );
        }
        let mut offer_pos = HashMap::with_capacity(offers.len());
        let mut category_pos: HashMap<&str, u32> = HashMap::new();
        let store_category: Vec<u32> = stores
            .iter()
            .map(|s| {
                let n = category_pos.len() as u32;
                *category_pos.entry(s.category.as_str()).or_insert(n)
            })
            .collect();
        let mut category_offers = vec![Vec::new(); category_pos.len()];
        // (store, offer) for every store an offer names by id.
        let mut named: Vec<(u32, u32)> = Vec::new();
        for (k, o) in offers.iter().enumerate() {
            let at = format!("offers[{k}]");
            o.validate().map_err(|e| e.within(&at))?;
            if offer_pos.insert(o.id.clone(), k as u32).is_some() {
                return Err(FieldError::new(
                    format!("{at}.id"),
                    format!("duplicate offer id {:?}", o.id.as_str()),
                ));
            }
            for (j, sid) in o.store_ids.iter().enumerate() {
                let p = store_pos.get(sid).ok_or_else(|| {
                    FieldError::new(
                        format!("{at}.store_ids[{j}]"),
                        format!("no store with id {:?}", sid.as_str()),
                    )
                })?;
                named.push((*p, k as u32));
            }
            for c in &o.store_categories {
                if let Some(&cp) = category_pos.get(c.as_str()) {
                    let list = &mut category_offers[cp as usize];
                    // Offers come in order: a category named twice is the last entry.
                    if list.last() != Some(&(k as u32)) {
                        list.push(k as u32);
                    }
                }
            }
        }
        // Offers naming stores by brand or tag: each store of one of them, as if named.
        if offers
            .iter()
            .any(|o| !o.store_brands.is_empty() || !o.store_tags.is_empty())
        {
            let mut by_brand: HashMap<&str, Vec<u32>> = HashMap::new();
            let mut by_tag: HashMap<&str, Vec<u32>> = HashMap::new();
            for (p, st) in stores.iter().enumerate() {
                if let Some(b) = &st.brand {
                    by_brand.entry(b.as_str()).or_default().push(p as u32);
                }
                for t in &st.tags {
                    by_tag.entry(t.as_str()).or_default().push(p as u32);
                }
            }
            for (k, o) in offers.iter().enumerate() {
                let brands = o
                    .store_brands
                    .iter()
                    .filter_map(|b| by_brand.get(b.as_str()));
                let tags = o.store_tags.iter().filter_map(|t| by_tag.get(t.as_str()));
                for list in brands.chain(tags) {
                    named.extend(list.iter().map(|&p| (p, k as u32)));
                }
            }
        }
        named.sort_unstable();
        named.dedup();
        let mut hours = HashMap::new();
        for (p, st) in stores.iter().enumerate() {
            if let Some(h) = &st.opening_hours {
                let parsed = crate::config::parse_opening_hours(h)
                    .map_err(|e| e.within(&format!("stores[{p}].opening_hours")))?;
                hours.insert(p as u32, Arc::new(parsed));
            }
        }
        let mut own_start = Vec::with_capacity(stores.len() + 1);
        let mut i = 0;
        for p in 0..stores.len() as u32 {
            own_start.push(i as u32);
            while i < named.len() && named[i].0 == p {
                i += 1;
            }
        }
        own_start.push(named.len() as u32);
        let own_offers = named.into_iter().map(|(_, k)| k).collect();
        let index = GeofenceIndex::build(shapes, DEFAULT_RESOLUTION)?;
        let holdouts = holdouts_of(&offers);
        let offer_campaign = vec![None; offers.len()];
        Ok(Catalog {
            stores,
            tzs,
            offers,
            category_offers,
            store_category,
            own_start,
            own_offers,
            index,
            store_pos,
            offer_pos,
            policy,
            campaigns: Vec::new(),
            offer_campaign,
            holdouts,
            spent: Arc::default(),
            coupons_out: Arc::default(),
            hours,
            version: None,
        })
    }

    /// The same catalog with these campaigns defined (validated, ids unique). Offers may
    /// name campaigns that are not defined, and campaigns may have no offers yet.
    ///
    /// # Errors
    /// The first invalid campaign, with its path (`campaigns[2].holdout`).
    pub fn with_campaigns(mut self, campaigns: Vec<Campaign>) -> Result<Self, FieldError> {
        let mut pos: HashMap<Id, u32> = HashMap::with_capacity(campaigns.len());
        self.holdouts = holdouts_of(&self.offers);
        self.spent = Arc::default();
        self.coupons_out = Arc::default();
        for (i, c) in campaigns.iter().enumerate() {
            let at = format!("campaigns[{i}]");
            c.validate().map_err(|e| e.within(&at))?;
            if pos.insert(c.id.clone(), i as u32).is_some() {
                return Err(FieldError::new(
                    format!("{at}.id"),
                    format!("duplicate campaign id {:?}", c.id.as_str()),
                ));
            }
            self.holdouts.insert(c.id.clone(), c.holdout);
        }
        self.offer_campaign = self
            .offers
            .iter()
            .map(|o| pos.get(&o.campaign_id).copied())
            .collect();
        self.campaigns = campaigns;
        Ok(self)
    }

    /// The same catalog, recorded as configuration version `version`.
    #[must_use]
    pub fn at_version(mut self, version: Option<String>) -> Self {
        self.version = version;
        self
    }

    /// The defined campaign of the offer at position `k`, if any.
    pub fn campaign_of(&self, k: u32) -> Option<&Campaign> {
        self.offer_campaign
            .get(k as usize)
            .copied()
            .flatten()
            .map(|c| &self.campaigns[c as usize])
    }

    /// A defined campaign by id.
    pub fn campaign(&self, id: &Id) -> Option<&Campaign> {
        self.campaigns.iter().find(|c| &c.id == id)
    }

    /// The holdout share of campaign `id` (0 when no offer names it).
    pub fn holdout_of(&self, id: &Id) -> f64 {
        self.holdouts.get(id).copied().unwrap_or(0.0)
    }

    /// Whether this host found the budget of campaign `id` spent.
    pub fn budget_spent(&self, id: &Id) -> bool {
        self.spent.read().expect("spent lock").contains(id)
    }

    /// Records that the budget of campaign `id` is spent (a commit refused a send).
    pub fn mark_spent(&self, id: &Id) {
        let mut spent = self.spent.write().expect("spent lock");
        // A send-rate key holds for its minute only: the earlier minutes' keys go.
        if let Some((_, minute)) = id.as_str().split_once(".rate.") {
            spent.retain(|k| {
                k.as_str()
                    .split_once(".rate.")
                    .is_none_or(|(_, m)| m >= minute)
            });
        }
        spent.insert(id.clone());
    }

    /// Whether the store at position `p` is open at `local` (its own local time) by its
    /// opening hours; a store without hours is open.
    pub fn is_open(&self, p: u32, local: chrono::NaiveDateTime) -> bool {
        self.hours.get(&p).is_none_or(|h| h.is_open(local))
    }

    /// Whether this host found the coupon pool of campaign `id` empty.
    pub fn coupons_exhausted(&self, id: &Id) -> bool {
        self.coupons_out.read().expect("coupons lock").contains(id)
    }

    /// Records that the coupon pool of campaign `id` is empty (no free code to pick).
    pub fn mark_coupons_out(&self, id: &Id) {
        self.coupons_out
            .write()
            .expect("coupons lock")
            .insert(id.clone());
    }

    /// Positions of the offers running at store position `p`, ascending, each once: those
    /// of its category and those naming it.
    pub fn offers_at(&self, p: u32) -> impl Iterator<Item = u32> + '_ {
        let p = p as usize;
        let by_category = &self.category_offers[self.store_category[p] as usize];
        let own = &self.own_offers[self.own_start[p] as usize..self.own_start[p + 1] as usize];
        Merge {
            a: by_category,
            b: own,
        }
    }

    /// An empty catalog.
    pub fn empty() -> Self {
        Self::build(Vec::new(), Vec::new(), CapPolicy::default()).expect("empty catalog is valid")
    }
}

/// Campaign id -> the largest holdout share among its offers.
fn holdouts_of(offers: &[Offer]) -> HashMap<Id, f64> {
    let mut holdouts: HashMap<Id, f64> = HashMap::new();
    for o in offers {
        let h = holdouts.entry(o.campaign_id.clone()).or_insert(0.0);
        *h = h.max(o.holdout);
    }
    holdouts
}

/// Two ascending lists merged into one, each value once.
struct Merge<'a> {
    a: &'a [u32],
    b: &'a [u32],
}

impl Iterator for Merge<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let next = match (self.a.first(), self.b.first()) {
            (None, None) => return None,
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (Some(&x), Some(&y)) => x.min(y),
        };
        if self.a.first() == Some(&next) {
            self.a = &self.a[1..];
        }
        if self.b.first() == Some(&next) {
            self.b = &self.b[1..];
        }
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// An offer runs at a store exactly when it names the store or the store's category,
        /// whatever the mix; in ascending order, each once.
        #[test]
        fn offers_at_a_store_are_those_naming_it_or_its_category(
            cats in proptest::collection::vec(0usize..4, 1..30),
            offers in proptest::collection::vec(
                (proptest::collection::vec(0usize..30, 0..5), proptest::collection::vec(0usize..5, 0..3)),
                0..25,
            ),
        ) {
            let n = cats.len();
            let stores: Vec<Store> = cats
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    serde_json::from_value(json!({
                        "id": format!("s{i}"), "name": "S", "category": format!("c{c}"),
                        "time_zone": "Europe/Helsinki",
                        "fence": {"type": "circle", "lat": 60.17, "lon": 24.94 + i as f64 * 0.01, "radius_m": 50.0},
                    }))
                    .unwrap()
                })
                .collect();
            let offers_json: Vec<Offer> = offers
                .iter()
                .enumerate()
                .filter(|(_, (ids, cs))| !ids.is_empty() || !cs.is_empty())
                .map(|(k, (ids, cs))| {
                    let ids: Vec<String> = ids.iter().map(|i| format!("s{}", i % n)).collect();
                    let cs: Vec<String> = cs.iter().map(|c| format!("c{c}")).collect();
                    serde_json::from_value(json!({
                        "id": format!("o{k}"), "campaign_id": "c", "title": "T", "body": "B",
                        "category": "coffee", "store_ids": ids, "store_categories": cs,
                        "trigger": {"type": "enter"}, "threshold": 0.0,
                    }))
                    .unwrap()
                })
                .collect();
            let cat = Catalog::build(stores.clone(), offers_json.clone(), CapPolicy::default()).unwrap();
            for (p, s) in stores.iter().enumerate() {
                let want: Vec<u32> = offers_json
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.store_ids.contains(&s.id) || o.store_categories.contains(&s.category))
                    .map(|(k, _)| k as u32)
                    .collect();
                prop_assert_eq!(cat.offers_at(p as u32).collect::<Vec<_>>(), want, "store {}", p);
            }
        }
    }
}

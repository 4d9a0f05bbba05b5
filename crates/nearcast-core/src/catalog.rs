//! The compiled marketer configuration: stores with their geofence index and time zones,
//! offers indexed by store. Rebuilt whenever the configuration changes, then shared
//! read-only by every decision.

use crate::FieldError;
use crate::config::{CapPolicy, Offer, Store};
use crate::geofence::{DEFAULT_RESOLUTION, GeofenceIndex, Shape};
use crate::ids::Id;
use chrono_tz::Tz;
use std::collections::HashMap;

/// Stores, offers and the cap policy, compiled for lookups.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Stores in index order.
    pub stores: Vec<Store>,
    /// Each store's time zone.
    pub tzs: Vec<Tz>,
    /// Offers.
    pub offers: Vec<Offer>,
    /// Store position -> positions of the offers running there.
    pub offers_at: Vec<Vec<u32>>,
    /// The geofence index; fence positions are store positions.
    pub index: GeofenceIndex,
    /// Store id -> position.
    pub store_pos: HashMap<Id, u32>,
    /// Offer id -> position.
    pub offer_pos: HashMap<Id, u32>,
    /// Caps and quiet hours.
    pub policy: CapPolicy,
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
        let mut offers_at = vec![Vec::new(); stores.len()];
        let mut offer_pos = HashMap::with_capacity(offers.len());
        let mut by_category: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, s) in stores.iter().enumerate() {
            by_category
                .entry(s.category.as_str())
                .or_default()
                .push(i as u32);
        }
        for (k, o) in offers.iter().enumerate() {
            let at = format!("offers[{k}]");
            o.validate().map_err(|e| e.within(&at))?;
            if offer_pos.insert(o.id.clone(), k as u32).is_some() {
                return Err(FieldError::new(
                    format!("{at}.id"),
                    format!("duplicate offer id {:?}", o.id.as_str()),
                ));
            }
            let mut at_stores: Vec<u32> = Vec::new();
            for (j, sid) in o.store_ids.iter().enumerate() {
                let p = store_pos.get(sid).ok_or_else(|| {
                    FieldError::new(
                        format!("{at}.store_ids[{j}]"),
                        format!("no store with id {:?}", sid.as_str()),
                    )
                })?;
                at_stores.push(*p);
            }
            for c in &o.store_categories {
                at_stores.extend(by_category.get(c.as_str()).into_iter().flatten());
            }
            at_stores.sort_unstable();
            at_stores.dedup();
            for s in at_stores {
                offers_at[s as usize].push(k as u32);
            }
        }
        let index = GeofenceIndex::build(shapes, DEFAULT_RESOLUTION)?;
        Ok(Catalog {
            stores,
            tzs,
            offers,
            offers_at,
            index,
            store_pos,
            offer_pos,
            policy,
        })
    }

    /// An empty catalog.
    pub fn empty() -> Self {
        Self::build(Vec::new(), Vec::new(), CapPolicy::default()).expect("empty catalog is valid")
    }
}

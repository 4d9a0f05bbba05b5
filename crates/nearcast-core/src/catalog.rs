//! The compiled marketer configuration: stores with their geofence index and time zones,
//! offers indexed by store. Shared read-only by every decision; a change makes a new
//! catalog beside it, which is then swapped in.
//!
//! A change of one store (added, moved, edited, removed) is applied in place of a rebuild:
//! [`Catalog::with_store`] and [`Catalog::without_store`] copy the catalog by reference
//! counts (stores sit in shared chunks of [`CHUNK`], the geofence index is a
//! [`FenceSet`] of an immutable base and the changes since) and change the one store's
//! position, in microseconds at any size. Store positions stay where they are between
//! full builds: an edited store keeps its position, a removed one leaves a hole, an added
//! one takes the next. [`Catalog::compacted`] folds the changes into a fresh build (the
//! engine does it off the request path once [`COMPACT_AFTER`] changes have gathered), and
//! [`Catalog::rebased`] carries the changes made meanwhile onto it.

use crate::FieldError;
use crate::campaign::Campaign;
use crate::config::{CapPolicy, Offer, Store};
use crate::geofence::{DEFAULT_RESOLUTION, FenceSet, GeofenceIndex, Shape};
use crate::ids::Id;
use chrono_tz::Tz;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// Store positions per shared chunk: a change copies one chunk's reference counts.
pub const CHUNK: usize = 256;

/// Single store changes after which the engine folds them into a fresh build (in the
/// background): each change copies the changes gathered so far, so they are kept few.
pub const COMPACT_AFTER: usize = 512;

/// What is compiled from the store at one position.
#[derive(Debug)]
struct Slot {
    tz: Tz,
    /// The store's category, a position in [`Categories::offers`].
    category: u32,
    /// The parsed opening hours: parsed when the store is compiled, or on first use in a
    /// catalog read from a [`crate::snapshot`] (its stores were checked when it was written).
    hours: std::sync::OnceLock<Option<Arc<opening_hours::OpeningHours>>>,
    /// Offers naming the store by id, brand or tag, ascending.
    own: Box<[u32]>,
}

/// A [`Slot`] with its store, in one allocation.
#[derive(Debug)]
struct Held<S> {
    slot: Slot,
    store: S,
}

/// One store position: the store and what is compiled from it. A catalog built from stores
/// (the serving host's) holds each store inline, so a decision reads it without another
/// indirection. A catalog read
/// from a snapshot holds where each store's record is, and decodes the store on first use:
/// a cold start reads 100,000 stores and a function then decides at a few of them, and
/// decoding every store there (its strings, its fence's geometry) took most of the start's
/// time and memory; deciding needs only what the slot compiles (time zone, category,
/// offers; the fence shape is in the index).
#[derive(Debug, Clone)]
enum SlotRef {
    Built(Arc<Held<Store>>),
    InSnapshot(Arc<Held<StoreRecord>>),
}

impl std::ops::Deref for SlotRef {
    type Target = Slot;
    #[inline]
    fn deref(&self) -> &Slot {
        match self {
            SlotRef::Built(h) => &h.slot,
            SlotRef::InSnapshot(h) => &h.slot,
        }
    }
}

impl SlotRef {
    fn new(slot: Slot, store: Holder) -> Self {
        match store {
            Holder::Store(store) => SlotRef::Built(Arc::new(Held { slot, store })),
            Holder::Record { snapshot, at } => SlotRef::InSnapshot(Arc::new(Held {
                slot,
                store: StoreRecord {
                    store: std::sync::OnceLock::new(),
                    snapshot,
                    at,
                },
            })),
        }
    }

    #[inline]
    fn store(&self) -> &Store {
        match self {
            SlotRef::Built(h) => &h.store,
            SlotRef::InSnapshot(h) => h.store.get(),
        }
    }
}

/// A store where a snapshot holds it, decoded on first use.
struct StoreRecord {
    store: std::sync::OnceLock<Box<Store>>,
    snapshot: Arc<Vec<u8>>,
    /// The offset of the store's record in `snapshot`.
    at: usize,
}

impl StoreRecord {
    fn get(&self) -> &Store {
        self.store
            .get_or_init(|| Box::new(crate::snapshot::store_at(&self.snapshot, self.at)))
    }
}

impl std::fmt::Debug for StoreRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.store.get() {
            Some(s) => s.fmt(f),
            None => write!(f, "<store at byte {} of its snapshot>", self.at),
        }
    }
}

/// A store as assembling takes it: decoded, or the record of it in a snapshot (read and
/// checked once already: [`crate::snapshot::decode`]).
pub(crate) enum Holder {
    Store(Store),
    Record { snapshot: Arc<Vec<u8>>, at: usize },
}

/// What assembling a catalog reads of each store: a decoded [`Store`], or a snapshot's
/// record of one (its text borrowed from the snapshot).
pub(crate) trait StoreSource {
    fn category(&self) -> &str;
    fn brand(&self) -> Option<&str>;
    fn tags(&self) -> impl Iterator<Item = &str>;
    fn opening_hours(&self) -> Option<&str>;
    fn into_holder(self) -> Holder;
}

impl StoreSource for Store {
    fn category(&self) -> &str {
        &self.category
    }
    fn brand(&self) -> Option<&str> {
        self.brand.as_deref()
    }
    fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(String::as_str)
    }
    fn opening_hours(&self) -> Option<&str> {
        self.opening_hours.as_deref()
    }
    fn into_holder(self) -> Holder {
        Holder::Store(self)
    }
}

/// Store positions in shared chunks (`None`: a removed store's hole).
#[derive(Debug, Clone, Default)]
struct Slots {
    chunks: Vec<Arc<Vec<Option<SlotRef>>>>,
    len: usize,
}

impl Slots {
    fn get(&self, p: u32) -> Option<&SlotRef> {
        let p = p as usize;
        self.chunks.get(p / CHUNK)?.get(p % CHUNK)?.as_ref()
    }

    fn push(&mut self, slot: Option<SlotRef>) {
        if self.len % CHUNK == 0 {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        let last = self.chunks.last_mut().expect("a chunk");
        Arc::make_mut(last).push(slot);
        self.len += 1;
    }

    fn set(&mut self, p: u32, slot: Option<SlotRef>) {
        let p = p as usize;
        while self.len <= p {
            self.push(None);
        }
        Arc::make_mut(&mut self.chunks[p / CHUNK])[p % CHUNK] = slot;
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &SlotRef)> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .enumerate()
            .filter_map(|(p, s)| s.as_ref().map(|s| (p as u32, s)))
    }
}

/// Store categories and the offers running at every store of each.
/// Store positions by id, with rustc's hash (FxHash): a cold start inserts 100,000 ids
/// and SipHash was 4 % of it; a decision looks stores up by id. Keys come from the
/// catalog's administrators, never from the devices whose events are decided.
pub(crate) type IdMap<V> = rustc_hash::FxHashMap<Id, V>;

#[derive(Debug, Clone, Default)]
struct Categories {
    pos: rustc_hash::FxHashMap<String, u32>,
    /// Category position -> positions of the offers running at every store of it
    /// (ascending). Shared by the category's stores: one list per store cost 100k stores ×
    /// ~170 offers × 4 bytes (68 MB) on a national network.
    offers: Vec<Vec<u32>>,
}

impl Categories {
    /// The position of `category`, added (with its offers) if new.
    fn position(&mut self, category: &str, offers: &[Offer]) -> u32 {
        if let Some(&p) = self.pos.get(category) {
            return p;
        }
        let p = self.offers.len() as u32;
        self.pos.insert(category.to_string(), p);
        self.offers.push(
            offers
                .iter()
                .enumerate()
                .filter(|(_, o)| o.store_categories.iter().any(|c| c == category))
                .map(|(k, _)| k as u32)
                .collect(),
        );
        p
    }
}

/// Stores, offers and the cap policy, compiled for lookups.
#[derive(Debug, Clone)]
pub struct Catalog {
    slots: Slots,
    /// Stores present (positions less holes).
    live: usize,
    /// The geofence index; fence positions are store positions.
    fences: FenceSet,
    /// Store id -> position at the last full build.
    store_pos: Arc<IdMap<u32>>,
    /// Store id -> position (`None`: removed) for the stores changed since.
    moved: Arc<HashMap<Id, Option<u32>>>,
    categories: Arc<Categories>,
    /// Offers.
    pub offers: Arc<Vec<Offer>>,
    /// Offer id -> position.
    pub offer_pos: Arc<HashMap<Id, u32>>,
    /// Caps and quiet hours.
    pub policy: CapPolicy,
    /// Defined campaigns.
    pub campaigns: Arc<Vec<Campaign>>,
    /// Offer position -> its campaign's position in `campaigns`, if defined.
    offer_campaign: Arc<Vec<Option<u32>>>,
    /// Campaign id -> the holdout share of its offers: the defined campaign's, else the
    /// largest among the campaign's offers (one share per campaign, as the draw is).
    holdouts: Arc<HashMap<Id, f64>>,
    /// Campaigns whose budget this host found spent since this catalog was built (a
    /// commit refused a send). Shared by the catalog's clones; a new catalog (a campaign
    /// changed, perhaps its budget raised) starts with none.
    pub spent: Arc<RwLock<HashSet<Id>>>,
    /// Campaigns whose coupon pool this host found empty since this catalog was built (an
    /// upload makes a new catalog).
    pub coupons_out: Arc<RwLock<HashSet<Id>>>,
    /// The configuration version: the id of the audit entry of the last change this
    /// catalog includes, when known. Every decision records it.
    pub version: Option<String>,
    /// Ids of the stores changed one at a time since the last full build, in order.
    changed: Arc<Vec<Id>>,
    /// Shared by every catalog derived from one full build (by store changes, campaigns
    /// or versions), and by no other.
    build: Arc<()>,
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
        let mut store_pos = IdMap::with_capacity_and_hasher(stores.len(), Default::default());
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
        let index = GeofenceIndex::build(shapes, DEFAULT_RESOLUTION)?;
        Self::assemble(stores, tzs, store_pos, index, offers, policy, true)
    }

    /// The catalog of `stores` (with their time zones and id -> position map) on `index`
    /// (their fences, in store order) with `offers` and `policy`: the offers checked and
    /// indexed by store. `parse_hours`: parse every store's opening hours now (and refuse
    /// invalid ones); else each is parsed on first use.
    pub(crate) fn assemble<S: StoreSource>(
        stores: Vec<S>,
        tzs: Vec<Tz>,
        store_pos: IdMap<u32>,
        index: GeofenceIndex,
        offers: Vec<Offer>,
        policy: CapPolicy,
        parse_hours: bool,
    ) -> Result<Self, FieldError> {
        let mut offer_pos = HashMap::with_capacity(offers.len());
        let mut categories = Categories::default();
        let store_category: Vec<u32> = stores
            .iter()
            .map(|s| {
                let n = categories.pos.len() as u32;
                match categories.pos.get(s.category()) {
                    Some(&p) => p,
                    None => {
                        categories.pos.insert(s.category().to_string(), n);
                        n
                    }
                }
            })
            .collect();
        categories.offers = vec![Vec::new(); categories.pos.len()];
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
                if let Some(&cp) = categories.pos.get(c.as_str()) {
                    let list = &mut categories.offers[cp as usize];
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
                if let Some(b) = st.brand() {
                    by_brand.entry(b).or_default().push(p as u32);
                }
                for t in st.tags() {
                    by_tag.entry(t).or_default().push(p as u32);
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
        let mut slots = Slots::default();
        let mut named = named.into_iter().peekable();
        for (p, ((store, tz), category)) in
            stores.into_iter().zip(tzs).zip(store_category).enumerate()
        {
            let hours = std::sync::OnceLock::new();
            if parse_hours {
                let parsed = match store.opening_hours() {
                    Some(h) => Some(Arc::new(
                        crate::config::parse_opening_hours(h)
                            .map_err(|e| e.within(&format!("stores[{p}].opening_hours")))?,
                    )),
                    None => None,
                };
                let _ = hours.set(parsed);
            }
            let mut own = Vec::new();
            while let Some((_, k)) = named.next_if(|&(q, _)| q == p as u32) {
                own.push(k);
            }
            slots.push(Some(SlotRef::new(
                Slot {
                    tz,
                    category,
                    hours,
                    own: own.into_boxed_slice(),
                },
                store.into_holder(),
            )));
        }
        let holdouts = holdouts_of(&offers);
        let offer_campaign = vec![None; offers.len()];
        Ok(Catalog {
            live: slots.len,
            slots,
            fences: FenceSet::new(index),
            store_pos: Arc::new(store_pos),
            moved: Arc::default(),
            categories: Arc::new(categories),
            offers: Arc::new(offers),
            offer_pos: Arc::new(offer_pos),
            policy,
            campaigns: Arc::default(),
            offer_campaign: Arc::new(offer_campaign),
            holdouts: Arc::new(holdouts),
            spent: Arc::default(),
            coupons_out: Arc::default(),
            version: None,
            changed: Arc::default(),
            build: Arc::new(()),
        })
    }

    /// The same catalog with these campaigns defined (validated, ids unique). Offers may
    /// name campaigns that are not defined, and campaigns may have no offers yet.
    ///
    /// # Errors
    /// The first invalid campaign, with its path (`campaigns[2].holdout`).
    pub fn with_campaigns(mut self, campaigns: Vec<Campaign>) -> Result<Self, FieldError> {
        let mut pos: HashMap<Id, u32> = HashMap::with_capacity(campaigns.len());
        let mut holdouts = holdouts_of(&self.offers);
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
            holdouts.insert(c.id.clone(), c.holdout);
        }
        self.holdouts = Arc::new(holdouts);
        self.offer_campaign = Arc::new(
            self.offers
                .iter()
                .map(|o| pos.get(&o.campaign_id).copied())
                .collect(),
        );
        self.campaigns = Arc::new(campaigns);
        Ok(self)
    }

    /// The same catalog, recorded as configuration version `version`.
    #[must_use]
    pub fn at_version(mut self, version: Option<String>) -> Self {
        self.version = version;
        self
    }

    /// The catalog with `store` put in (added, or replacing the store of its id), without
    /// a rebuild: see the [module documentation](self).
    ///
    /// # Errors
    /// An invalid store, naming the field (`fence.radius_m`).
    pub fn with_store(&self, store: Store) -> Result<Catalog, FieldError> {
        store.validate()?;
        let shape = Shape::from_fence(&store.fence).map_err(|e| e.within("fence.geometry"))?;
        let tz = crate::config::parse_tz(&store.time_zone).map_err(|e| e.within("time_zone"))?;
        let hours = match &store.opening_hours {
            Some(h) => Some(Arc::new(
                crate::config::parse_opening_hours(h).map_err(|e| e.within("opening_hours"))?,
            )),
            None => None,
        };
        let mut c = self.clone();
        let existing = self.store_position(&store.id);
        let p = existing.unwrap_or(self.slots.len as u32);
        c.fences.set(p, shape)?;
        let category = if self.categories.pos.contains_key(&store.category) {
            self.categories.pos[&store.category]
        } else {
            Arc::make_mut(&mut c.categories).position(&store.category, &self.offers)
        };
        let own: Box<[u32]> = self
            .offers
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                o.store_ids.contains(&store.id)
                    || store
                        .brand
                        .as_ref()
                        .is_some_and(|b| o.store_brands.contains(b))
                    || o.store_tags.iter().any(|t| store.tags.contains(t))
            })
            .map(|(k, _)| k as u32)
            .collect();
        if existing.is_none() {
            c.live += 1;
            if self.store_pos.get(&store.id) != Some(&p) {
                Arc::make_mut(&mut c.moved).insert(store.id.clone(), Some(p));
            }
        }
        Arc::make_mut(&mut c.changed).push(store.id.clone());
        c.slots.set(
            p,
            Some(SlotRef::new(
                Slot {
                    tz,
                    category,
                    hours: std::sync::OnceLock::from(hours),
                    own,
                },
                Holder::Store(store),
            )),
        );
        Ok(c)
    }

    /// The catalog without the store `id` (`None` when there is no such store), without a
    /// rebuild.
    ///
    /// # Errors
    /// An offer still names the store by id (the field names it: `offers[2].store_ids[0]`).
    pub fn without_store(&self, id: &Id) -> Result<Option<Catalog>, FieldError> {
        let Some(p) = self.store_position(id) else {
            return Ok(None);
        };
        for (k, o) in self.offers.iter().enumerate() {
            if let Some(j) = o.store_ids.iter().position(|s| s == id) {
                return Err(FieldError::new(
                    format!("offers[{k}].store_ids[{j}]"),
                    format!("no store with id {:?}", id.as_str()),
                ));
            }
        }
        let mut c = self.clone();
        c.fences.remove(p);
        c.slots.set(p, None);
        c.live -= 1;
        Arc::make_mut(&mut c.moved).insert(id.clone(), None);
        Arc::make_mut(&mut c.changed).push(id.clone());
        Ok(Some(c))
    }

    /// This catalog with the configuration changes made after it, when each is one store
    /// put or removed: what an instance applies (in microseconds each) to follow changes
    /// made through another. `newest_first` is the head of the audit log, newest first.
    /// `None` when this catalog's version is not among them (more changes than were read,
    /// or a catalog of no known version) or a change of another kind is (offers, policy,
    /// campaigns, imports, loads): the caller then reads the whole catalog.
    pub fn following(&self, newest_first: &[crate::audit::AuditEntry]) -> Option<Catalog> {
        let mine = self.version.as_deref()?;
        let k = newest_first.iter().position(|e| e.id == mine)?;
        let mut c = self.clone();
        for e in newest_first[..k].iter().rev() {
            c = match e.action.as_str() {
                "store.put" => {
                    let store: Store = serde_json::from_value(e.after.clone()?).ok()?;
                    c.with_store(store).ok()?
                }
                "store.delete" => {
                    let id = Id::parse(e.target.as_deref()?).ok()?;
                    let without = c.without_store(&id).ok()?;
                    without.unwrap_or(c)
                }
                // Recorded in the log, but no change to the catalog.
                "webhooks.redrive" => c,
                _ => return None,
            };
        }
        Some(c.at_version(newest_first.first().map(|e| e.id.clone())))
    }

    /// The geofence index as built, when no store change was made on top of it.
    pub(crate) fn fences_as_built(&self) -> Option<&GeofenceIndex> {
        self.fences.unchanged()
    }

    /// Whether every store position holds a store (no removed store's hole).
    pub(crate) fn without_holes(&self) -> bool {
        self.live == self.slots.len
    }

    /// Single store changes since the last full build.
    pub fn changes(&self) -> usize {
        self.changed.len()
    }

    /// The same configuration as one fresh build (positions renumbered, no holes, no
    /// changes on top), with this catalog's campaigns, version and what this host found
    /// spent.
    ///
    /// # Errors
    /// None expected: the configuration was valid piece by piece.
    pub fn compacted(&self) -> Result<Catalog, FieldError> {
        let mut stores: Vec<Store> = self.stores().cloned().collect();
        stores.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut c = Catalog::build(stores, self.offers.to_vec(), self.policy.clone())?;
        c.offers = self.offers.clone();
        Ok(c.with_campaign_state_of(self))
    }

    /// This catalog with `other`'s campaigns, version and spent marks (what changes
    /// without a rebuild besides stores).
    fn with_campaign_state_of(mut self, other: &Catalog) -> Catalog {
        self.campaigns = other.campaigns.clone();
        self.offer_campaign = other.offer_campaign.clone();
        self.holdouts = other.holdouts.clone();
        self.spent = other.spent.clone();
        self.coupons_out = other.coupons_out.clone();
        self.version = other.version.clone();
        self
    }

    /// `compact` (made by [`Self::compacted`] from `snapshot`, an earlier state of this
    /// catalog) with what changed here since: the campaigns, version and spent marks of
    /// this catalog, and the store changes made after the snapshot, replayed. `None` when
    /// this catalog is not derived from `snapshot`'s build (a full rebuild came between).
    pub fn rebased(&self, compact: Catalog, snapshot: &Catalog) -> Option<Catalog> {
        if !Arc::ptr_eq(&self.build, &snapshot.build)
            || !Arc::ptr_eq(&self.offers, &snapshot.offers)
            || self.changed.len() < snapshot.changed.len()
        {
            return None;
        }
        let mut c = compact.with_campaign_state_of(self);
        for id in &self.changed[snapshot.changed.len()..] {
            c = match self.store_by_id(id) {
                Some(s) => c.with_store(s.clone()).ok()?,
                None => c.without_store(id).ok()?.unwrap_or(c),
            };
        }
        Some(c)
    }

    /// The store at position `p`.
    ///
    /// # Panics
    /// When no store is there: positions come from [`Self::lookup_into`] or
    /// [`Self::store_position`] of the same catalog.
    pub fn store(&self, p: u32) -> &Store {
        self.slot(p).store()
    }

    fn slot(&self, p: u32) -> &SlotRef {
        self.slots
            .get(p)
            .unwrap_or_else(|| panic!("no store at position {p}"))
    }

    /// The time zone of the store at position `p`.
    pub fn tz(&self, p: u32) -> Tz {
        self.slot(p).tz
    }

    /// The fence of the store at position `p`.
    pub fn shape(&self, p: u32) -> &Shape {
        self.fences
            .shape(p)
            .unwrap_or_else(|| panic!("no fence at position {p}"))
    }

    /// The position of store `id`, if the catalog has it.
    #[inline]
    pub fn store_position(&self, id: &Id) -> Option<u32> {
        if !self.moved.is_empty()
            && let Some(&p) = self.moved.get(id)
        {
            return p;
        }
        self.store_pos.get(id).copied()
    }

    /// Whether the catalog has store `id`.
    pub fn has_store(&self, id: &Id) -> bool {
        self.store_position(id).is_some()
    }

    /// Store `id`, if the catalog has it.
    pub fn store_by_id(&self, id: &Id) -> Option<&Store> {
        self.store_position(id).map(|p| self.store(p))
    }

    /// The stores, in position order.
    pub fn stores(&self) -> impl Iterator<Item = &Store> {
        self.slots.iter().map(|(_, s)| s.store())
    }

    /// The stores with their positions, in position order.
    pub fn stores_at(&self) -> impl Iterator<Item = (u32, &Store)> {
        self.slots.iter().map(|(p, s)| (p, s.store()))
    }

    /// Number of stores.
    pub fn store_count(&self) -> usize {
        self.live
    }

    /// Positions of the stores whose fences contain the point, appended to `out`
    /// (ascending).
    #[inline]
    pub fn lookup_into(&self, lat: f64, lon: f64, out: &mut Vec<u32>) {
        self.fences.lookup_into(lat, lon, out);
    }

    /// Positions of the stores whose fences contain the point (ascending).
    pub fn lookup(&self, lat: f64, lon: f64) -> Vec<u32> {
        self.fences.lookup(lat, lon)
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
        self.slots
            .get(p)
            .and_then(|s| {
                s.hours
                    .get_or_init(|| {
                        let text = s.store().opening_hours.as_deref()?;
                        crate::config::parse_opening_hours(text).ok().map(Arc::new)
                    })
                    .as_ref()
            })
            .is_none_or(|h| h.is_open(local))
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
        let slot = self.slot(p);
        Merge {
            a: &self.categories.offers[slot.category as usize],
            b: &slot.own,
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

    /// A store of id `s{i}` for the change tests: a circle near Helsinki, of category
    /// `c{cat}`, brand `b{brand}` (none for 0), one tag, opening hours or not.
    fn store_of(i: usize, cat: usize, brand: usize, lon_step: f64, hours: bool) -> Store {
        let mut v = json!({
            "id": format!("s{i}"), "name": format!("S{i}"), "category": format!("c{cat}"),
            "time_zone": if i % 2 == 0 { "Europe/Helsinki" } else { "Europe/Stockholm" },
            "tags": [format!("t{}", (i + cat) % 3)],
            "fence": {"type": "circle", "lat": 60.17, "lon": 24.94 + lon_step * 0.001, "radius_m": 40.0 + 30.0 * (i % 3) as f64},
        });
        if brand > 0 {
            v["brand"] = json!(format!("b{brand}"));
        }
        if hours {
            v["opening_hours"] = json!("Mo-Fr 08:00-20:00");
        }
        serde_json::from_value(v).unwrap()
    }

    fn offers_for_changes() -> Vec<Offer> {
        let o = |k: usize, extra: serde_json::Value| -> Offer {
            let mut v = json!({
                "id": format!("o{k}"), "campaign_id": "c", "title": "T", "body": "B",
                "category": "coffee", "trigger": {"type": "enter"}, "threshold": 0.0,
            });
            for (key, val) in extra.as_object().unwrap() {
                v[key] = val.clone();
            }
            serde_json::from_value(v).unwrap()
        };
        vec![
            o(0, json!({"store_categories": ["c0", "c5"]})),
            o(1, json!({"store_categories": ["c1"]})),
            o(2, json!({"store_brands": ["b1"]})),
            o(3, json!({"store_tags": ["t2"]})),
            o(4, json!({"store_ids": ["s0"]})),
            o(
                5,
                json!({"store_categories": ["c2", "c3"], "store_brands": ["b2"]}),
            ),
        ]
    }

    /// Everything a decision reads of a store, by its id, from a catalog: the offers there
    /// (by id), time zone, opening at a weekday and a Sunday noon, fence, and the stores
    /// found at points across the fences (by id).
    fn seen(cat: &Catalog) -> Vec<String> {
        let mut out: Vec<String> = cat
            .stores()
            .map(|s| {
                let p = cat.store_position(&s.id).unwrap();
                assert_eq!(cat.store(p), s);
                let offers: Vec<&str> = cat
                    .offers_at(p)
                    .map(|k| cat.offers[k as usize].id.as_str())
                    .collect();
                let day = |d| {
                    chrono::NaiveDate::from_ymd_opt(2026, 12, d)
                        .unwrap()
                        .and_hms_opt(12, 0, 0)
                        .unwrap()
                };
                format!(
                    "{} {offers:?} {} {} {} {:?}",
                    s.id,
                    cat.tz(p),
                    cat.is_open(p, day(2)),
                    cat.is_open(p, day(6)),
                    cat.shape(p)
                )
            })
            .collect();
        out.sort();
        for k in 0..40 {
            let (lat, lon) = (60.17 + (k % 5) as f64 * 0.0002, 24.94 + k as f64 * 0.0005);
            let mut ids: Vec<&str> = cat
                .lookup(lat, lon)
                .into_iter()
                .map(|p| cat.store(p).id.as_str())
                .collect();
            ids.sort_unstable();
            out.push(format!("{lat} {lon} {ids:?}"));
        }
        out.push(format!("{} stores", cat.store_count()));
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// Stores put and removed one at a time on a built catalog (new ids, edits that
        /// move a fence or change a category, brand, tag or hours, removals, ids put back)
        /// leave a catalog that every decision reads as the full build of the same stores:
        /// offers by category, id, brand and tag, time zones, hours, fences and lookups.
        /// Its compaction reads the same, and a compaction taken midway and rebased on the
        /// changes made after it too.
        #[test]
        fn single_store_changes_read_as_a_full_build_of_the_same_stores(
            base in proptest::collection::vec((0usize..4, 0usize..3, 0.0..30.0f64, any::<bool>()), 1..10),
            changes in proptest::collection::vec(
                (0usize..14, any::<bool>(), 0usize..6, 0usize..3, 0.0..30.0f64, any::<bool>()), 1..30),
            midway in 0usize..30,
        ) {
            let offers = offers_for_changes();
            let stores: Vec<Store> = base.iter().enumerate()
                .map(|(i, &(c, b, x, h))| store_of(i, c, b, x, h)).collect();
            let mut model: std::collections::BTreeMap<Id, Store> =
                stores.iter().map(|s| (s.id.clone(), s.clone())).collect();
            let mut cat = Catalog::build(stores, offers.clone(), CapPolicy::default()).unwrap();
            let mut snapshot = None;
            for (n, &(i, put, c, b, x, h)) in changes.iter().enumerate() {
                if n == midway {
                    snapshot = Some(cat.clone());
                }
                let id = Id::parse(&format!("s{i}")).unwrap();
                if put || i == 0 {
                    let s = store_of(i, c, b, x, h);
                    model.insert(id, s.clone());
                    cat = cat.with_store(s).unwrap();
                } else {
                    let gone = cat.without_store(&id).unwrap();
                    prop_assert_eq!(gone.is_some(), model.remove(&id).is_some());
                    if let Some(g) = gone {
                        cat = g;
                    }
                }
            }
            let full = Catalog::build(model.into_values().collect(), offers, CapPolicy::default()).unwrap();
            let want = seen(&full);
            prop_assert_eq!(&seen(&cat), &want, "changed in place");
            let compact = cat.compacted().unwrap();
            prop_assert_eq!(compact.changes(), 0);
            prop_assert_eq!(&seen(&compact), &want, "compacted");
            let read = crate::snapshot::decode(crate::snapshot::encode(&cat).unwrap()).unwrap();
            prop_assert_eq!(&seen(&read), &want, "through a snapshot");
            if let Some(snap) = snapshot {
                let rebased = cat.rebased(snap.compacted().unwrap(), &snap).expect("same build");
                prop_assert_eq!(&seen(&rebased), &want, "compacted midway, rebased");
                prop_assert!(rebased.changes() <= changes.len() - midway.min(changes.len()));
            }
            // A full build in between: a compaction of the older build is not rebased.
            let other = Catalog::build(vec![], vec![], CapPolicy::default()).unwrap();
            prop_assert!(other.rebased(cat.compacted().unwrap(), &cat).is_none());
        }
    }

    /// Store changes read from the audit log are applied as the full build of the same
    /// stores reads; any other change, or a log that does not reach back to the catalog's
    /// version, is refused (the caller reads the whole catalog).
    #[test]
    fn store_changes_from_the_audit_log_are_followed_and_nothing_else() {
        use crate::audit::{Actor, AuditEntry};
        let actor = Actor::system("test");
        let at = chrono::Utc::now();
        let offers = offers_for_changes();
        let stores: Vec<Store> = (0..6)
            .map(|i| store_of(i, i % 4, i % 3, i as f64, i % 2 == 0))
            .collect();
        let start = AuditEntry::new(at, &actor, "catalog.load");
        let cat = Catalog::build(stores.clone(), offers.clone(), CapPolicy::default())
            .unwrap()
            .at_version(Some(start.id.clone()));
        let moved = store_of(3, 1, 2, 9.5, true);
        let added = store_of(7, 2, 1, 12.0, false);
        let put = |s: &Store| {
            AuditEntry::new(at, &actor, "store.put")
                .target(&s.id)
                .change(None, Some(s))
        };
        let gone = Id::parse("s5").unwrap();
        let delete = AuditEntry::new(at, &actor, "store.delete")
            .target(&gone)
            .change(Some(&stores[5]), None);
        let mut log = vec![start.clone(), put(&moved), put(&added), delete];
        log.reverse();
        let followed = cat.following(&log).expect("store changes only");
        assert_eq!(followed.version.as_deref(), Some(log[0].id.as_str()));
        let mut want: Vec<Store> = stores[..5].to_vec();
        want[3] = moved.clone();
        want.push(added.clone());
        let full = Catalog::build(want, offers.clone(), CapPolicy::default()).unwrap();
        assert_eq!(seen(&followed), seen(&full));
        // Nothing newer: the same catalog.
        assert_eq!(seen(&cat.following(&[start.clone()]).unwrap()), seen(&cat));
        // A redrive of webhook dead letters is in the log but changes no store: stepped
        // over, to its version.
        let redrive = AuditEntry::new(at, &actor, "webhooks.redrive");
        let over = cat
            .following(&[redrive.clone(), put(&added), start.clone()])
            .expect("a redrive is followed");
        assert_eq!(over.version.as_deref(), Some(redrive.id.as_str()));
        assert_eq!(
            seen(&over),
            seen(&cat.following(&[put(&added), start.clone()]).unwrap())
        );
        // An offer change among them, or a log that does not reach the catalog's version.
        let offer = AuditEntry::new(at, &actor, "offer.put");
        assert!(
            cat.following(&[offer, put(&added), start.clone()])
                .is_none()
        );
        assert!(cat.following(&[put(&added)]).is_none());
        assert!(cat.clone().at_version(None).following(&log).is_none());
        // A put whose store does not read is refused, not half applied.
        let mut bad = put(&added);
        bad.after = Some(serde_json::json!({"id": "s9"}));
        assert!(cat.following(&[bad, start]).is_none());
    }

    /// Removing a store that an offer names by id is refused, naming the offer's field, as
    /// a full build refuses it; the catalog is unchanged.
    #[test]
    fn a_store_an_offer_names_cannot_be_removed() {
        let cat = Catalog::build(
            vec![store_of(0, 0, 0, 1.0, false), store_of(1, 0, 0, 2.0, false)],
            offers_for_changes(),
            CapPolicy::default(),
        )
        .unwrap();
        let e = cat.without_store(&Id::parse("s0").unwrap()).unwrap_err();
        assert_eq!(e.field, "offers[4].store_ids[0]");
        assert!(cat.has_store(&Id::parse("s0").unwrap()));
        assert!(
            cat.without_store(&Id::parse("nope").unwrap())
                .unwrap()
                .is_none()
        );
        let c = cat
            .without_store(&Id::parse("s1").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!((c.store_count(), cat.store_count()), (1, 2));
    }

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

//! Automatic prefix caching: the keys and values of prompt prefixes that earlier
//! requests computed, reused by later requests that start with the same tokens (a fixed
//! system prompt with few-shot examples, a judge rubric), so that only the rest of each
//! prompt is prefilled.
//!
//! Prompts are cut into blocks of [`PREFIX_BLOCK_TOKENS`] tokens. A block's key hashes
//! its parent's key with its own tokens, so a key names the whole prefix up to the end of
//! that block; each entry also keeps its tokens and parent key, so a hash collision can
//! never hand out another prefix's keys and values. An entry holds the block's KV
//! ([`KvBlock`]), which does not depend on where a row is placed in a batch: keys are
//! rotated by their position relative to the row's first token.
//!
//! The cache is bounded in bytes and evicts the least recently used blocks. A lookup or
//! insert touches a chain from its deepest block to its root, so a block is always older
//! than its parent: the oldest block is a leaf, and eviction never leaves a block whose
//! parent is gone.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use seqit_model::{KvBlock, ModelConfig};
use serde::Serialize;

/// Tokens per cached block (the packed cache's key-block width).
pub const PREFIX_BLOCK_TOKENS: usize = 16;

/// The parent key of a prompt's first block.
const ROOT: u64 = 0x5eb1_7c0d_e0f0_0d42;

/// Counters of a [`PrefixCache`] since it was created (or cleared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PrefixCacheStats {
    /// Prompts looked up.
    pub lookups: u64,
    /// Tokens of the prompts looked up.
    pub prompt_tokens: u64,
    /// Prompt tokens whose keys and values came from the cache instead of the prompt's
    /// own prefill.
    pub hit_tokens: u64,
    /// Tokens computed once, ahead of a batch, for a prefix that several of its prompts
    /// share (those prompts then count them as hits).
    pub shared_prefill_tokens: u64,
    /// Blocks added.
    pub inserted_blocks: u64,
    /// Blocks evicted to stay within the budget.
    pub evictions: u64,
    /// Blocks held now.
    pub blocks: usize,
    /// Bytes of keys and values held now.
    pub bytes: usize,
    /// The budget in bytes.
    pub capacity_bytes: usize,
}

impl PrefixCacheStats {
    /// `hit_tokens / prompt_tokens` (0 before any lookup).
    pub fn hit_rate(&self) -> f64 {
        if self.prompt_tokens == 0 {
            0.0
        } else {
            self.hit_tokens as f64 / self.prompt_tokens as f64
        }
    }
}

/// Keys and values of a model's cache per token: layers × KV heads × head dim × 2
/// (keys and values) × 2 bytes (f16).
pub fn kv_bytes_per_token(config: &ModelConfig) -> usize {
    config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 2 * 2
}

struct Entry {
    parent: u64,
    tokens: Box<[u32]>,
    kv: Arc<KvBlock>,
    tick: u64,
    children: usize,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, Entry>,
    /// Entries by last use: tick → key.
    lru: BTreeMap<u64, u64>,
    tick: u64,
    stats: PrefixCacheStats,
}

/// A thread-safe, byte-bounded cache of prompt-prefix blocks.
pub struct PrefixCache {
    block: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for PrefixCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixCache")
            .field("block_tokens", &self.block)
            .field("stats", &self.stats())
            .finish()
    }
}

impl PrefixCache {
    /// An empty cache holding at most `capacity_bytes` of keys and values in blocks of
    /// `block_tokens` tokens.
    pub fn new(capacity_bytes: usize, block_tokens: usize) -> Self {
        assert!(block_tokens > 0, "blocks hold at least one token");
        Self {
            block: block_tokens,
            inner: Mutex::new(Inner {
                stats: PrefixCacheStats {
                    capacity_bytes,
                    ..PrefixCacheStats::default()
                },
                ..Inner::default()
            }),
        }
    }

    /// Tokens per block.
    pub fn block_tokens(&self) -> usize {
        self.block
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The cache's invariants hold between statements, so a panic elsewhere while it
        // was locked leaves it usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The chain keys of the full blocks of `tokens`: key `i` names `tokens[..(i+1)·block]`.
    pub fn block_keys(&self, tokens: &[u32]) -> Vec<u64> {
        let mut parent = ROOT;
        tokens
            .chunks_exact(self.block)
            .map(|block| {
                parent = child_key(parent, block);
                parent
            })
            .collect()
    }

    /// Blocks that a prompt may take from the cache: whole blocks, leaving at least its
    /// last token to compute (its logits are needed).
    pub fn usable_blocks(&self, prompt_len: usize) -> usize {
        prompt_len.saturating_sub(1) / self.block
    }

    /// Looks a prompt up: the cached blocks of its longest cached prefix (at most
    /// [`Self::usable_blocks`]), in order, counted in the statistics.
    pub fn lookup(&self, prompt: &[u32]) -> Vec<Arc<KvBlock>> {
        let limit = self.usable_blocks(prompt.len()) * self.block;
        let mut inner = self.lock();
        let found = self.chain(&mut inner, &prompt[..limit], true);
        let stats = &mut inner.stats;
        stats.lookups += 1;
        stats.prompt_tokens += prompt.len() as u64;
        stats.hit_tokens += (found.len() * self.block) as u64;
        found
    }

    /// The cached blocks of the longest cached prefix of `tokens` (whole blocks), marked
    /// as used, without counting a lookup.
    pub fn cached_prefix(&self, tokens: &[u32]) -> Vec<Arc<KvBlock>> {
        let mut inner = self.lock();
        self.chain(&mut inner, tokens, true)
    }

    /// How many leading blocks of `tokens` are cached (nothing is marked as used).
    pub fn cached_blocks(&self, tokens: &[u32]) -> usize {
        let mut inner = self.lock();
        self.chain(&mut inner, tokens, false).len()
    }

    /// The cached chain of `tokens`' blocks from the root, touched deepest first when
    /// `touch`.
    fn chain(&self, inner: &mut Inner, tokens: &[u32], touch: bool) -> Vec<Arc<KvBlock>> {
        let mut parent = ROOT;
        let mut keys = Vec::new();
        let mut found = Vec::new();
        for block in tokens.chunks_exact(self.block) {
            let key = child_key(parent, block);
            match inner.entries.get(&key) {
                Some(e) if e.parent == parent && *e.tokens == *block => {
                    found.push(Arc::clone(&e.kv));
                    keys.push(key);
                    parent = key;
                }
                _ => break,
            }
        }
        if touch {
            touch_chain(inner, &keys);
        }
        found
    }

    /// Adds blocks `first..first + blocks.len()` of `tokens` (block `first + i` is
    /// `blocks[i]`, the keys and values of tokens `(first + i)·block..`). Blocks
    /// `..first` must be cached (else nothing is added); blocks already cached are kept.
    /// Evicts least recently used blocks to stay within the budget. Returns the number
    /// of blocks added.
    pub fn insert(&self, tokens: &[u32], first: usize, blocks: Vec<KvBlock>) -> usize {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut parent = ROOT;
        let mut chain = Vec::new();
        let mut added = 0;
        let mut blocks = blocks.into_iter();
        for (i, block) in tokens.chunks_exact(self.block).enumerate() {
            let kv = if i >= first {
                match blocks.next() {
                    Some(kv) => Some(kv),
                    None => break,
                }
            } else {
                None
            };
            let key = child_key(parent, block);
            match inner.entries.get(&key) {
                Some(e) if e.parent == parent && *e.tokens == *block => {}
                // A different prefix under the same key (a hash collision): leave it.
                Some(_) => break,
                None => {
                    // Without its keys and values (a block before `first` evicted since
                    // it was looked up), nothing further can be attached.
                    let Some(kv) = kv.filter(|kv| kv.positions == self.block) else {
                        break;
                    };
                    let bytes = kv.bytes() + std::mem::size_of_val(block);
                    if let Some(p) = inner.entries.get_mut(&parent) {
                        p.children += 1;
                    }
                    inner.entries.insert(
                        key,
                        Entry {
                            parent,
                            tokens: block.into(),
                            kv: Arc::new(kv),
                            tick: 0,
                            children: 0,
                            bytes,
                        },
                    );
                    let stats = &mut inner.stats;
                    stats.bytes += bytes;
                    stats.blocks += 1;
                    stats.inserted_blocks += 1;
                    added += 1;
                }
            }
            chain.push(key);
            parent = key;
        }
        touch_chain(inner, &chain);
        evict(inner);
        added
    }

    /// Drops every block (when the model's weights change) and resets the counters.
    pub fn clear(&self) {
        let mut inner = self.lock();
        let capacity_bytes = inner.stats.capacity_bytes;
        *inner = Inner {
            stats: PrefixCacheStats {
                capacity_bytes,
                ..PrefixCacheStats::default()
            },
            ..Inner::default()
        };
    }

    /// The counters now.
    pub fn stats(&self) -> PrefixCacheStats {
        self.lock().stats
    }

    /// Counts tokens computed ahead of a batch for a shared prefix.
    pub(crate) fn record_shared_prefill(&self, tokens: usize) {
        self.lock().stats.shared_prefill_tokens += tokens as u64;
    }
}

fn child_key(parent: u64, tokens: &[u32]) -> u64 {
    let mut hasher = DefaultHasher::new();
    parent.hash(&mut hasher);
    tokens.hash(&mut hasher);
    hasher.finish()
}

/// Evicts least recently used blocks, leaves only, until the cache fits its budget.
fn evict(inner: &mut Inner) {
    while inner.stats.bytes > inner.stats.capacity_bytes {
        // The oldest block is a leaf (blocks are touched deepest first); the search only
        // guards that invariant.
        let Some((tick, key)) = inner
            .lru
            .iter()
            .map(|(&tick, &key)| (tick, key))
            .find(|(_, key)| inner.entries[key].children == 0)
        else {
            break;
        };
        inner.lru.remove(&tick);
        let entry = inner
            .entries
            .remove(&key)
            .expect("listed blocks are cached");
        if let Some(parent) = inner.entries.get_mut(&entry.parent) {
            parent.children -= 1;
        }
        let stats = &mut inner.stats;
        stats.bytes -= entry.bytes;
        stats.blocks -= 1;
        stats.evictions += 1;
    }
}

/// Marks `keys` (a chain from the root) as just used, deepest first, so that every block
/// stays older than its parent.
fn touch_chain(inner: &mut Inner, keys: &[u64]) {
    for &key in keys.iter().rev() {
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(&key).expect("a chain of cached keys");
        let old = std::mem::replace(&mut entry.tick, tick);
        inner.lru.remove(&old);
        inner.lru.insert(tick, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: usize = 4;

    /// A block whose values name it.
    fn kv(tag: u16) -> KvBlock {
        KvBlock {
            positions: B,
            kv_heads: 1,
            head_dim: 2,
            k: vec![vec![tag; B * 2]],
            v: vec![vec![tag + 1; B * 2]],
        }
    }

    fn block_bytes() -> usize {
        kv(0).bytes() + B * 4
    }

    fn tags(blocks: &[Arc<KvBlock>]) -> Vec<u16> {
        blocks.iter().map(|b| b.k[0][0]).collect()
    }

    #[test]
    fn a_prompt_finds_its_cached_prefix_and_keeps_one_token_to_compute() {
        let cache = PrefixCache::new(1 << 20, B);
        let prompt: Vec<u32> = (0..12).collect();
        assert!(cache.lookup(&prompt).is_empty());
        assert_eq!(cache.insert(&prompt, 0, vec![kv(1), kv(2), kv(3)]), 3);
        // 12 tokens: at most 2 blocks, so that the last token is computed.
        assert_eq!(tags(&cache.lookup(&prompt)), [1, 2]);
        let longer: Vec<u32> = (0..20).collect();
        assert_eq!(tags(&cache.lookup(&longer)), [1, 2, 3]);
        // The same tokens after a different first block are another prefix.
        let mut other = longer.clone();
        other[0] = 99;
        assert!(cache.lookup(&other).is_empty());
        let stats = cache.stats();
        assert_eq!(stats.lookups, 4);
        assert_eq!(stats.prompt_tokens, 12 + 12 + 20 + 20);
        assert_eq!(stats.hit_tokens, (2 + 3) * B as u64);
        assert_eq!(stats.blocks, 3);
        assert_eq!(stats.bytes, 3 * block_bytes());
        assert!((stats.hit_rate() - 20.0 / 64.0).abs() < 1e-12);
    }

    #[test]
    fn inserting_after_a_cached_prefix_adds_only_new_blocks() {
        let cache = PrefixCache::new(1 << 20, B);
        let prompt: Vec<u32> = (0..16).collect();
        cache.insert(&prompt, 0, vec![kv(1)]);
        assert_eq!(cache.cached_blocks(&prompt), 1);
        assert_eq!(cache.insert(&prompt, 1, vec![kv(2), kv(3)]), 2);
        // Already cached blocks are kept, not replaced.
        assert_eq!(
            cache.insert(&prompt, 0, vec![kv(7), kv(8), kv(9), kv(4)]),
            1
        );
        assert_eq!(tags(&cache.cached_prefix(&prompt)), [1, 2, 3, 4]);
        // Blocks whose parent is not cached cannot be attached.
        let stranger: Vec<u32> = (100..116).collect();
        assert_eq!(cache.insert(&stranger, 2, vec![kv(5)]), 0);
        assert_eq!(cache.stats().blocks, 4);
    }

    #[test]
    fn eviction_drops_the_least_recently_used_leaves_first() {
        let cache = PrefixCache::new(3 * block_bytes(), B);
        let a: Vec<u32> = (0..9).collect();
        let b: Vec<u32> = (50..59).collect();
        cache.insert(&a, 0, vec![kv(1), kv(2)]);
        cache.insert(&b, 0, vec![kv(3), kv(4)]);
        // Four blocks for a budget of three: `a`'s leaf, the oldest block, goes.
        let stats = cache.stats();
        assert_eq!((stats.blocks, stats.evictions), (3, 1));
        assert!(stats.bytes <= stats.capacity_bytes);
        assert_eq!(tags(&cache.lookup(&a)), [1]);
        assert_eq!(tags(&cache.lookup(&b)), [3, 4]);
        // `b` was used last: a new block evicts what is left of `a`, the next one `b`'s
        // leaf (never a parent before its child).
        let c: Vec<u32> = (80..85).collect();
        cache.insert(&c, 0, vec![kv(5)]);
        assert_eq!(tags(&cache.lookup(&a)), Vec::<u16>::new());
        cache.insert(&a, 0, vec![kv(1)]);
        assert_eq!(tags(&cache.lookup(&b)), [3], "b's leaf was the oldest");
        assert_eq!(tags(&cache.lookup(&c)), [5]);
        assert_eq!(cache.stats().evictions, 3);
    }

    #[test]
    fn a_chain_longer_than_the_budget_keeps_its_head() {
        let cache = PrefixCache::new(2 * block_bytes(), B);
        let prompt: Vec<u32> = (0..17).collect();
        cache.insert(&prompt, 0, vec![kv(1), kv(2), kv(3), kv(4)]);
        assert_eq!(tags(&cache.lookup(&prompt)), [1, 2]);
        assert_eq!(cache.stats().evictions, 2);
        cache.clear();
        let stats = cache.stats();
        assert_eq!((stats.blocks, stats.bytes, stats.evictions), (0, 0, 0));
        assert_eq!(stats.capacity_bytes, 2 * block_bytes());
    }

    #[test]
    fn keys_name_whole_prefixes() {
        let cache = PrefixCache::new(0, B);
        let a = cache.block_keys(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let b = cache.block_keys(&[0, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(a.len(), 2);
        assert_ne!(a[1], b[1], "same second block after a different first one");
        assert_eq!(a, cache.block_keys(&[1, 2, 3, 4, 5, 6, 7, 8]));
    }

    #[test]
    fn the_cache_is_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<PrefixCache>();
    }
}

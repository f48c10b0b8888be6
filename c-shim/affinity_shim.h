/*
 * The boundary between VPP (C) and the affinity forwarding agent (Rust).
 * bindgen turns this header into the Rust declarations of the plugin's FFI
 * module; the C side includes it too, so both agree on every layout.
 */
#ifndef AFFINITY_SHIM_H
#define AFFINITY_SHIM_H

#include <stdint.h>

/* Where a packet goes after the affinity node. */
enum affinity_next
{
  AFFINITY_NEXT_CONTINUE = 0, /* next feature on the arc (ip4-lookup) */
  AFFINITY_NEXT_DROP = 1,
  AFFINITY_NEXT_LOOKUP = 2,   /* a punt: IPv4/UDP service message built in place */
  AFFINITY_NEXT_FORWARD = 3,  /* dispatch, untranslated, via forward_address */
  AFFINITY_N_NEXT = 4,
};

/* Trace flags (what the agent did). */
enum affinity_action_flag
{
  AFFINITY_TRACE_FIXED = 1,
  AFFINITY_TRACE_WILDCARD = 2,
  AFFINITY_TRACE_NAT = 4,
  AFFINITY_TRACE_PUNT = 8,
  AFFINITY_TRACE_DROP = 16,
  AFFINITY_TRACE_FORWARD = 32,
  AFFINITY_TRACE_CONSUMED = 64,
};

/* One packet of a frame, filled by C, completed by Rust. */
typedef struct affinity_pkt
{
  uint8_t *data;     /* IPv4 header of the packet */
  uint32_t len;      /* bytes from data to the end of the buffer */
  uint32_t headroom; /* writable bytes before data */
  /* outputs */
  int32_t advance;   /* add to current_data (negative: bytes prepended) */
  uint32_t next;     /* enum affinity_next */
  uint32_t flags;    /* enum affinity_action_flag */
  uint32_t new_len;  /* packet length after processing (punts grow it) */
  uint32_t forward_address; /* AFFINITY_NEXT_FORWARD: next hop, network order */
} affinity_pkt_t;

/* startup.conf `affinity { ... }`, set before affinity_rs_init. */
typedef struct affinity_config
{
  uint32_t agent_address;   /* network order */
  uint32_t multicast_group; /* network order, 0 = none */
  uint32_t managers[8];     /* network order, hellos go there */
  uint32_t n_managers;
  uint16_t listen_port;
  uint32_t fixed_table_size;
  uint32_t wildcard_table_size;
  uint32_t n_threads;
  const char *auth_key_file; /* NULL = no authentication */
  uint16_t auth_key_id;
  /* `disable-action NAME`: NUL-separated names, ending with an empty one */
  const char *disabled_actions;
} affinity_config_t;

/* ---- implemented in Rust (vpp-plugin/src/ffi) -------------------------- */
int affinity_rs_init (const affinity_config_t *cfg);
void affinity_rs_process (uint32_t thread_index, double now,
			  affinity_pkt_t *pkts, uint32_t n);
/* A service message received on the control port. */
void affinity_rs_control (double now, const uint8_t *payload, uint32_t len,
			  uint32_t src_address, uint16_t src_port);
/* Timers: expiry, hold timeouts. */
void affinity_rs_tick (double now);
/* `show affinity ...`: a NUL-terminated text, freed with affinity_rs_free. */
char *affinity_rs_show (double now, const char *args);
void affinity_rs_free (char *s);
/* API dumps: Rust calls back once per row. Addresses in network order. */
typedef struct affinity_fixed_row
{
  uint8_t protocol;
  uint8_t nat_flags;
  uint16_t src_port, dst_port, nat_src_port, nat_dst_port;
  uint32_t src_address, dst_address, nat_src_address, nat_dst_address, owner;
  uint32_t ttl_remaining_ds;
  uint64_t packets, bytes;
} affinity_fixed_row_t;

typedef struct affinity_wildcard_row
{
  uint8_t protocol, src_prefix_len, dst_prefix_len;
  uint16_t src_port, dst_port, service_precedence, backup_precedence,
    interest_mask;
  uint32_t owner, id, src_address, dst_address, ttl_remaining_ds;
} affinity_wildcard_row_t;

typedef void (*affinity_fixed_cb) (void *ctx, const affinity_fixed_row_t *row);
typedef void (*affinity_wildcard_cb) (void *ctx,
				      const affinity_wildcard_row_t *row);
uint32_t affinity_rs_fixed_rows (double now, uint32_t max, affinity_fixed_cb cb,
				 void *ctx);
uint32_t affinity_rs_wildcard_rows (double now, affinity_wildcard_cb cb,
				    void *ctx);
void affinity_rs_set_agent_address (uint32_t address);
/* Benchmark and test support: installs n_addrs * n_ports fixed affinities
   proto tcp, src (src_base + i):(port_base + j) -> dst:dport, NAT to
   nat_dst:nat_dport, or when forward is not 0 dispatched untranslated to
   that forward address. Returns how many were installed. */
uint32_t affinity_rs_test_fill (double now, uint32_t src_base, uint32_t n_addrs,
				uint16_t port_base, uint32_t n_ports, uint32_t dst,
				uint16_t dport, uint32_t nat_dst,
				uint16_t nat_dport, uint32_t forward);
uint32_t affinity_rs_counter_count (void);
const char *affinity_rs_counter_name (uint32_t i);
uint64_t affinity_rs_counter_value (uint32_t i);
int affinity_rs_set_auth_key (uint16_t key_id, uint8_t algorithm,
			      const uint8_t *key, uint32_t len);

/* ---- implemented in C (c-shim/affinity.c), called from Rust ------------- */
/* Sends a complete IPv4 packet (built by Rust) through ip4-lookup. */
void affinity_shim_send_ip (const uint8_t *packet, uint32_t len);
/* Links the shim's object into the plugin; returns the shim's version. */
uint32_t affinity_shim_version (void);

#endif

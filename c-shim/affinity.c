/*
 * affinity: the C that VPP's macros and inline functions need — plugin,
 * node, feature, CLI, startup.conf and binary-API registration, traces and
 * error counters. Per frame, one call into Rust with the packets' data
 * pointers; everything else about packets is decided in Rust.
 */
#include <vlib/vlib.h>
#include <vnet/vnet.h>
#include <vnet/plugin/plugin.h>
#include <vnet/ip/ip4.h>
#include <vnet/ip/ip4_packet.h>
#include <vnet/udp/udp_local.h>
#include <vnet/feature/feature.h>
#include <vnet/fib/ip4_fib.h>
#include <vnet/dpo/load_balance.h>
#include <vnet/adj/adj.h>
#include <vnet/ip-neighbor/ip_neighbor.h>
#include <vpp/app/version.h>
#include <vlibapi/api.h>
#include <vlibmemory/api.h>
#include <vnet/ip/ip_types_api.h>

#include <affinity/affinity.api_enum.h>
#include <affinity/affinity.api_types.h>

#include "affinity_shim.h"

typedef struct
{
  u16 msg_id_base;
  affinity_config_t cfg;
  u8 *key_file;
  u8 *disabled_actions; /* NUL-separated names */
  u8 initialised;
  u32 ctl_node_index;
} affinity_main_t;

static affinity_main_t affinity_main;

#define REPLY_MSG_ID_BASE am->msg_id_base
#include <vlibapi/api_helper_macros.h>

/* The plugin registration (vlib_plugin_registration) is a Rust static in
   vpp-plugin/src/ffi: a cdylib exports only Rust's symbols, and VPP looks
   the registration up with dlsym. */

uint32_t
affinity_shim_version (void)
{
  return 1;
}

/* ---- error counters and trace ------------------------------------------ */

#define foreach_affinity_error                                                \
  _ (PROCESSED, "packets processed")                                          \
  _ (FIXED, "fixed affinity hits")                                            \
  _ (WILDCARD, "wildcard affinity hits")                                      \
  _ (NAT, "packets translated")                                               \
  _ (PUNT, "packets punted to a service manager")                             \
  _ (DROP, "packets dropped by affinity rule")                                \
  _ (CONSUMED, "packets held or copied out")                                  \
  _ (FORWARD, "dispatched to a forward address")                             \
  _ (FORWARD_UNRESOLVED, "forward address unresolved, ARPed")                 \
  _ (CONTROL, "service messages received")                                    \
  _ (CONTROL_BAD, "control packets without a usable IPv4/UDP header")

typedef enum
{
#define _(sym, str) AFFINITY_ERROR_##sym,
  foreach_affinity_error
#undef _
    AFFINITY_N_ERROR,
} affinity_error_t;

static char *affinity_error_strings[] = {
#define _(sym, string) string,
  foreach_affinity_error
#undef _
};

/* The node's next slots. */
enum
{
  AFFINITY_SLOT_DROP = 0,
  AFFINITY_SLOT_LOOKUP = 1,
  AFFINITY_SLOT_LOAD_BALANCE = 2,
};

typedef struct
{
  u32 flags, next;
  ip4_address_t src_before, dst_before, src_after, dst_after;
  u16 sport_before, dport_before, sport_after, dport_after;
} affinity_trace_t;

static u8 *
format_affinity_trace (u8 *s, va_list *args)
{
  CLIB_UNUSED (vlib_main_t * vm) = va_arg (*args, vlib_main_t *);
  CLIB_UNUSED (vlib_node_t * node) = va_arg (*args, vlib_node_t *);
  affinity_trace_t *t = va_arg (*args, affinity_trace_t *);
  s = format (s, "affinity: %s%s%s%s%s%s%s next %u\n",
	      t->flags & AFFINITY_TRACE_FIXED ? "fixed " : "",
	      t->flags & AFFINITY_TRACE_WILDCARD ? "wildcard " : "",
	      t->flags & AFFINITY_TRACE_NAT ? "nat " : "",
	      t->flags & AFFINITY_TRACE_PUNT ? "punt " : "",
	      t->flags & AFFINITY_TRACE_DROP ? "drop " : "",
	      t->flags & AFFINITY_TRACE_FORWARD ? "forward " : "",
	      t->flags & AFFINITY_TRACE_CONSUMED ? "consumed " : "", t->next);
  s = format (s, "  before %U:%u -> %U:%u\n", format_ip4_address,
	      &t->src_before, t->sport_before, format_ip4_address,
	      &t->dst_before, t->dport_before);
  s = format (s, "  after  %U:%u -> %U:%u", format_ip4_address, &t->src_after,
	      t->sport_after, format_ip4_address, &t->dst_after,
	      t->dport_after);
  return s;
}

static void
affinity_trace_addrs (u8 *p, u32 len, ip4_address_t *src, ip4_address_t *dst,
		      u16 *sport, u16 *dport)
{
  ip4_header_t *ip = (ip4_header_t *) p;
  if (len < sizeof (*ip))
    return;
  *src = ip->src_address;
  *dst = ip->dst_address;
  u32 hl = ip4_header_bytes (ip);
  if ((ip->protocol == IP_PROTOCOL_TCP || ip->protocol == IP_PROTOCOL_UDP) &&
      len >= hl + 4 && !ip4_get_fragment_offset (ip))
    {
      udp_header_t *u = (udp_header_t *) (p + hl);
      *sport = clib_net_to_host_u16 (u->src_port);
      *dport = clib_net_to_host_u16 (u->dst_port);
    }
}

/* ---- the data node ----------------------------------------------------- */

/* Dispatch without translation: route the packet as if its destination
   were the forward address (the next hop), in the FIB the packet would have
   been looked up in, and hand it to ip4-load-balance as ip4-lookup would.
   A forward address on a connected subnet whose neighbour is not yet known
   resolves to the subnet's glean adjacency, which would ARP for the
   packet's own destination: ARP for the forward address instead, rate
   limited, and drop the packet (counted) until the neighbour is known. */
static_always_inline u16
affinity_forward (vlib_main_t *vm, vlib_node_runtime_t *node,
		  vlib_buffer_t *b, u32 forward_address, u32 *counts)
{
  static __thread f64 last_probe;
  ip4_address_t nh = { .as_u32 = forward_address };
  u32 rx = vnet_buffer (b)->sw_if_index[VLIB_RX];
  u32 fib_index = vnet_buffer (b)->sw_if_index[VLIB_TX];
  if (fib_index == (u32) ~0)
    fib_index = rx < vec_len (ip4_main.fib_index_by_sw_if_index) ?
		  ip4_main.fib_index_by_sw_if_index[rx] :
		  0;
  u32 lbi = ip4_fib_forwarding_lookup (fib_index, &nh);
  const load_balance_t *lb = load_balance_get (lbi);
  const dpo_id_t *dpo = load_balance_get_bucket_i (lb, 0);
  if (PREDICT_FALSE (dpo->dpoi_type == DPO_ADJACENCY_GLEAN))
    {
      f64 now = vlib_time_now (vm);
      if (now - last_probe > 0.1)
	{
	  last_probe = now;
	  ip46_address_t dst = { .ip4 = nh };
	  ip_neighbor_probe_dst (adj_get (dpo->dpoi_index)->rewrite_header.sw_if_index,
				 vm->thread_index, AF_IP4, &dst);
	}
      /* error-drop counts it under this reason. */
      b->error = node->errors[AFFINITY_ERROR_FORWARD_UNRESOLVED];
      return AFFINITY_SLOT_DROP;
    }
  vnet_buffer (b)->ip.adj_index[VLIB_TX] = lbi;
  vnet_buffer (b)->ip.flow_hash = 0;
  counts[AFFINITY_ERROR_FORWARD]++;
  return AFFINITY_SLOT_LOAD_BALANCE;
}

vlib_node_registration_t affinity_node;

VLIB_NODE_FN (affinity_node)
(vlib_main_t *vm, vlib_node_runtime_t *node, vlib_frame_t *frame)
{
  u32 *from = vlib_frame_vector_args (frame);
  u32 n = frame->n_vectors;
  vlib_buffer_t *bufs[VLIB_FRAME_SIZE], **b = bufs;
  u16 nexts[VLIB_FRAME_SIZE];
  affinity_pkt_t pkts[VLIB_FRAME_SIZE];
  u32 counts[AFFINITY_N_ERROR] = { 0 };
  affinity_trace_t before[VLIB_FRAME_SIZE];
  int tracing = node->flags & VLIB_NODE_FLAG_TRACE;

  vlib_get_buffers (vm, from, bufs, n);
  for (u32 i = 0; i < n; i++)
    {
      if (i + 4 < n)
	{
	  vlib_prefetch_buffer_header (b[i + 4], LOAD);
	  clib_prefetch_store (b[i + 4]->data + b[i + 4]->current_data);
	}
      affinity_pkt_t *p = &pkts[i];
      p->data = vlib_buffer_get_current (b[i]);
      p->len = b[i]->current_length;
      /* Headroom: the buffer's pre-data area plus what precedes current. */
      p->headroom = VLIB_BUFFER_PRE_DATA_SIZE + b[i]->current_data;
      p->advance = 0;
      p->next = AFFINITY_NEXT_CONTINUE;
      p->flags = 0;
      p->new_len = p->len;
      p->forward_address = 0;
      if (PREDICT_FALSE (tracing && (b[i]->flags & VLIB_BUFFER_IS_TRACED)))
	{
	  clib_memset (&before[i], 0, sizeof (before[i]));
	  affinity_trace_addrs (p->data, p->len, &before[i].src_before,
				&before[i].dst_before, &before[i].sport_before,
				&before[i].dport_before);
	}
    }

  affinity_rs_process (vm->thread_index, vlib_time_now (vm), pkts, n);

  for (u32 i = 0; i < n; i++)
    {
      affinity_pkt_t *p = &pkts[i];
      u32 next = p->next;
      if (next == AFFINITY_NEXT_CONTINUE)
	{
	  u32 fnext;
	  vnet_feature_next (&fnext, b[i]);
	  nexts[i] = fnext;
	}
      else if (next == AFFINITY_NEXT_LOOKUP)
	{
	  vlib_buffer_advance (b[i], p->advance);
	  b[i]->current_length = p->new_len;
	  /* Punts are routed in the default table, from this router. */
	  vnet_buffer (b[i])->sw_if_index[VLIB_TX] = 0;
	  b[i]->flags |= VNET_BUFFER_F_LOCALLY_ORIGINATED;
	  nexts[i] = AFFINITY_SLOT_LOOKUP;
	}
      else if (next == AFFINITY_NEXT_FORWARD)
	nexts[i] = affinity_forward (vm, node, b[i], p->forward_address, counts);
      else
	{
	  /* error-drop counts it under this reason. */
	  b[i]->error = node->errors[p->flags & AFFINITY_TRACE_CONSUMED ?
				       AFFINITY_ERROR_CONSUMED :
				       AFFINITY_ERROR_DROP];
	  nexts[i] = AFFINITY_SLOT_DROP;
	}
      counts[AFFINITY_ERROR_PROCESSED]++;
      counts[AFFINITY_ERROR_FIXED] += !!(p->flags & AFFINITY_TRACE_FIXED);
      counts[AFFINITY_ERROR_WILDCARD] += !!(p->flags & AFFINITY_TRACE_WILDCARD);
      counts[AFFINITY_ERROR_NAT] += !!(p->flags & AFFINITY_TRACE_NAT);
      counts[AFFINITY_ERROR_PUNT] += !!(p->flags & AFFINITY_TRACE_PUNT);
      if (PREDICT_FALSE (b[i]->flags & VLIB_BUFFER_IS_TRACED))
	{
	  affinity_trace_t *t = vlib_add_trace (vm, node, b[i], sizeof (*t));
	  *t = before[i];
	  t->flags = p->flags;
	  t->next = nexts[i];
	  /* After: the buffer as it leaves (for a punt, the service message's
	     IPv4/UDP header towards the manager). */
	  u8 *cur = vlib_buffer_get_current (b[i]);
	  affinity_trace_addrs (cur, b[i]->current_length, &t->src_after,
				&t->dst_after, &t->sport_after, &t->dport_after);
	}
    }
  vlib_buffer_enqueue_to_next (vm, node, from, nexts, n);
  for (u32 e = 0; e < AFFINITY_N_ERROR; e++)
    if (counts[e])
      vlib_node_increment_counter (vm, affinity_node.index, e, counts[e]);
  return n;
}

VLIB_REGISTER_NODE (affinity_node) = {
  .name = "affinity",
  .vector_size = sizeof (u32),
  .format_trace = format_affinity_trace,
  .type = VLIB_NODE_TYPE_INTERNAL,
  .n_errors = AFFINITY_N_ERROR,
  .error_strings = affinity_error_strings,
  /* CONTINUE is not a slot: it follows the feature arc. */
  .n_next_nodes = 3,
  .next_nodes = {
    [AFFINITY_SLOT_DROP] = "error-drop",
    [AFFINITY_SLOT_LOOKUP] = "ip4-lookup",
    [AFFINITY_SLOT_LOAD_BALANCE] = "ip4-load-balance",
  },
};

VNET_FEATURE_INIT (affinity_feature, static) = {
  .arc_name = "ip4-unicast",
  .node_name = "affinity",
  .runs_before = VNET_FEATURES ("ip4-lookup"),
};

/* ---- sending packets built in Rust ------------------------------------- */

void
affinity_shim_send_ip (const uint8_t *packet, uint32_t len)
{
  vlib_main_t *vm = vlib_get_main ();
  u32 bi;
  if (len == 0 || len > vlib_buffer_get_default_data_size (vm) ||
      vlib_buffer_alloc (vm, &bi, 1) != 1)
    return;
  vlib_buffer_t *b = vlib_get_buffer (vm, bi);
  clib_memcpy_fast (vlib_buffer_get_current (b), packet, len);
  b->current_length = len;
  b->flags |= VNET_BUFFER_F_LOCALLY_ORIGINATED;
  vnet_buffer (b)->sw_if_index[VLIB_RX] = 0;
  vnet_buffer (b)->sw_if_index[VLIB_TX] = 0;
  vlib_frame_t *f = vlib_get_frame_to_node (vm, ip4_lookup_node.index);
  u32 *to = vlib_frame_vector_args (f);
  to[0] = bi;
  f->n_vectors = 1;
  vlib_put_frame_to_node (vm, ip4_lookup_node.index, f);
}

/* ---- the control-input node: service messages on the UDP port ----------- */

vlib_node_registration_t affinity_ctl_node;

VLIB_NODE_FN (affinity_ctl_node)
(vlib_main_t *vm, vlib_node_runtime_t *node, vlib_frame_t *frame)
{
  u32 *from = vlib_frame_vector_args (frame);
  u32 n = frame->n_vectors, bad = 0;
  for (u32 i = 0; i < n; i++)
    {
      vlib_buffer_t *b = vlib_get_buffer (vm, from[i]);
      /* udp4-local leaves current_data at the UDP payload; the IP header
	 is where ip4-local recorded it. */
      i16 l3 = vnet_buffer (b)->l3_hdr_offset;
      ip4_header_t *ip = (ip4_header_t *) (b->data + l3);
      if (l3 < -VLIB_BUFFER_PRE_DATA_SIZE ||
	  b->current_data - l3 < (i16) (sizeof (*ip) + sizeof (udp_header_t)) ||
	  (ip->ip_version_and_header_length >> 4) != 4 ||
	  l3 + ip4_header_bytes (ip) + (i16) sizeof (udp_header_t) !=
	    b->current_data)
	{
	  bad++;
	  continue;
	}
      udp_header_t *udp = (udp_header_t *) ((u8 *) ip + ip4_header_bytes (ip));
      u8 *payload = vlib_buffer_get_current (b);
      u32 len = b->current_length;
      if (PREDICT_FALSE (b->flags & VLIB_BUFFER_NEXT_PRESENT))
	{
	  /* A large datagram (several messages back to back, as a manager's
	     GSO burst arrives through af_packet) spans a buffer chain:
	     linearise it. */
	  static __thread u8 *linear;
	  vec_reset_length (linear);
	  vec_validate (linear, vlib_buffer_length_in_chain (vm, b) - 1);
	  len = vlib_buffer_contents (vm, from[i], linear);
	  payload = linear;
	}
      affinity_rs_control (vlib_time_now (vm), payload, len,
			   ip->src_address.as_u32,
			   clib_net_to_host_u16 (udp->src_port));
    }
  vlib_buffer_free (vm, from, n);
  vlib_node_increment_counter (vm, affinity_node.index, AFFINITY_ERROR_CONTROL,
			       n - bad);
  if (bad)
    vlib_node_increment_counter (vm, affinity_node.index,
				 AFFINITY_ERROR_CONTROL_BAD, bad);
  return n;
}

VLIB_REGISTER_NODE (affinity_ctl_node) = {
  .name = "affinity-control-input",
  .vector_size = sizeof (u32),
  .type = VLIB_NODE_TYPE_INTERNAL,
  .n_next_nodes = 1,
  .next_nodes = { [0] = "error-drop" },
};

/* ---- timers ------------------------------------------------------------ */

static uword
affinity_process (vlib_main_t *vm, vlib_node_runtime_t *rt, vlib_frame_t *f)
{
  while (1)
    {
      vlib_process_wait_for_event_or_clock (vm, 0.1);
      vlib_process_get_events (vm, 0);
      if (affinity_main.initialised)
	affinity_rs_tick (vlib_time_now (vm));
    }
  return 0;
}

VLIB_REGISTER_NODE (affinity_process_node) = {
  .function = affinity_process,
  .type = VLIB_NODE_TYPE_PROCESS,
  .name = "affinity-process",
};

/* ---- startup.conf ------------------------------------------------------ */

static clib_error_t *
affinity_config_fn (vlib_main_t *vm, unformat_input_t *input)
{
  affinity_main_t *am = &affinity_main;
  ip4_address_t a;
  u32 v;
  u8 *word = 0;
  while (unformat_check_input (input) != UNFORMAT_END_OF_INPUT)
    {
      if (unformat (input, "agent-address %U", unformat_ip4_address, &a))
	am->cfg.agent_address = a.as_u32;
      else if (unformat (input, "multicast-group %U", unformat_ip4_address,
			 &a))
	am->cfg.multicast_group = a.as_u32;
      else if (unformat (input, "manager %U", unformat_ip4_address, &a))
	{
	  if (am->cfg.n_managers < 8)
	    am->cfg.managers[am->cfg.n_managers++] = a.as_u32;
	}
      else if (unformat (input, "listen-port %u", &v) && v && v < 65536)
	am->cfg.listen_port = v;
      else if (unformat (input, "fixed-table-size %u", &v))
	am->cfg.fixed_table_size = v;
      else if (unformat (input, "wildcard-table-size %u", &v))
	am->cfg.wildcard_table_size = v;
      else if (unformat (input, "auth-key-file %s", &am->key_file))
	vec_add1 (am->key_file, 0);
      else if (unformat (input, "auth-key-id %u", &v))
	am->cfg.auth_key_id = v;
      else if (unformat (input, "disable-action %s", &word))
	{
	  /* Checked by Rust at init (unknown names fail the start). */
	  vec_append (am->disabled_actions, word);
	  vec_add1 (am->disabled_actions, 0);
	  vec_free (word);
	}
      else
	return clib_error_return (0, "affinity: unknown input '%U'",
				  format_unformat_error, input);
    }
  return 0;
}

VLIB_CONFIG_FUNCTION (affinity_config_fn, "affinity");

/* ---- CLI ---------------------------------------------------------------- */

static int
affinity_enable_disable (u32 sw_if_index, int enable)
{
  vnet_main_t *vnm = vnet_get_main ();
  if (pool_is_free_index (vnm->interface_main.sw_interfaces, sw_if_index))
    return VNET_API_ERROR_INVALID_SW_IF_INDEX;
  return vnet_feature_enable_disable ("ip4-unicast", "affinity", sw_if_index,
				      enable, 0, 0);
}

static clib_error_t *
affinity_interface_command_fn (vlib_main_t *vm, unformat_input_t *input,
			       vlib_cli_command_t *cmd)
{
  u32 sw_if_index = ~0;
  int enable = 1;
  while (unformat_check_input (input) != UNFORMAT_END_OF_INPUT)
    {
      if (unformat (input, "disable"))
	enable = 0;
      else if (unformat (input, "%U", unformat_vnet_sw_interface,
			 vnet_get_main (), &sw_if_index))
	;
      else
	return clib_error_return (0, "unknown input '%U'",
				  format_unformat_error, input);
    }
  if (sw_if_index == ~0)
    return clib_error_return (0, "usage: set interface affinity <interface> [disable]");
  int rv = affinity_enable_disable (sw_if_index, enable);
  if (rv)
    return clib_error_return (0, "affinity: enable/disable failed (%d)", rv);
  return 0;
}

VLIB_CLI_COMMAND (affinity_interface_command, static) = {
  .path = "set interface affinity",
  .short_help = "set interface affinity <interface> [disable]",
  .function = affinity_interface_command_fn,
};

static clib_error_t *
affinity_show_command_fn (vlib_main_t *vm, unformat_input_t *input,
			  vlib_cli_command_t *cmd)
{
  u8 *args = 0;
  /* Everything after "show affinity" goes to Rust, which parses filters. */
  while (unformat_check_input (input) != UNFORMAT_END_OF_INPUT)
    {
      u8 *word = 0;
      if (!unformat (input, "%s", &word))
	break;
      if (vec_len (args))
	vec_add1 (args, ' ');
      vec_append (args, word);
      vec_free (word);
    }
  vec_add1 (args, 0);
  char *text = affinity_rs_show (vlib_time_now (vm), (char *) args);
  if (text)
    {
      vlib_cli_output (vm, "%s", text);
      affinity_rs_free (text);
    }
  vec_free (args);
  return 0;
}

VLIB_CLI_COMMAND (affinity_show_command, static) = {
  .path = "show affinity",
  .short_help = "show affinity [fixed [proto tcp|udp] [src A] [dst A] [verbose] | wildcard | managers | stats]",
  .function = affinity_show_command_fn,
};

static clib_error_t *
affinity_clear_command_fn (vlib_main_t *vm, unformat_input_t *input,
			   vlib_cli_command_t *cmd)
{
  char *text = affinity_rs_show (vlib_time_now (vm), "clear stats");
  if (text)
    {
      vlib_cli_output (vm, "%s", text);
      affinity_rs_free (text);
    }
  return 0;
}

VLIB_CLI_COMMAND (affinity_clear_command, static) = {
  .path = "clear affinity stats",
  .short_help = "clear affinity stats",
  .function = affinity_clear_command_fn,
};

static clib_error_t *
affinity_set_command_fn (vlib_main_t *vm, unformat_input_t *input,
			 vlib_cli_command_t *cmd)
{
  ip4_address_t a;
  u8 *key = 0;
  u32 id = 1;
  while (unformat_check_input (input) != UNFORMAT_END_OF_INPUT)
    {
      if (unformat (input, "agent-address %U", unformat_ip4_address, &a))
	affinity_rs_set_agent_address (a.as_u32);
      else if (unformat (input, "auth-key %s key-id %u", &key, &id))
	{
	  int rv = affinity_rs_set_auth_key (id, 2, key, vec_len (key));
	  vec_free (key);
	  if (rv)
	    return clib_error_return (0, "affinity: bad key");
	}
      else
	return clib_error_return (0, "unknown input '%U'",
				  format_unformat_error, input);
    }
  return 0;
}

VLIB_CLI_COMMAND (affinity_set_command, static) = {
  .path = "set affinity",
  .short_help = "set affinity [agent-address <a.b.c.d>] [auth-key <secret> key-id <n>]",
  .function = affinity_set_command_fn,
};

static clib_error_t *
affinity_test_fill_command_fn (vlib_main_t *vm, unformat_input_t *input,
			       vlib_cli_command_t *cmd)
{
  ip4_address_t src, dst, nat = { 0 }, fwd = { 0 };
  u32 n_addrs = 0, n_ports = 1, port = 1024, dport = 80, nport = 0;
  if (!unformat (input, "%U %u ports %u %u dst %U %u", unformat_ip4_address,
		 &src, &n_addrs, &port, &n_ports, unformat_ip4_address, &dst,
		 &dport) ||
      !(unformat (input, "nat %U %u", unformat_ip4_address, &nat, &nport) ||
	unformat (input, "forward %U", unformat_ip4_address, &fwd)))
    return clib_error_return (0, "usage: test affinity fill <src> <n-addrs> ports <first> <count> dst <addr> <port> (nat <addr> <port> | forward <addr>)");
  u32 n = affinity_rs_test_fill (vlib_time_now (vm), src.as_u32, n_addrs, port,
				 n_ports, dst.as_u32, dport, nat.as_u32, nport,
				 fwd.as_u32);
  vlib_cli_output (vm, "installed %u fixed affinities", n);
  return 0;
}

VLIB_CLI_COMMAND (affinity_test_fill_command, static) = {
  .path = "test affinity fill",
  .short_help = "test affinity fill <src> <n-addrs> ports <first> <count> dst <addr> <port> (nat <addr> <port> | forward <addr>)",
  .function = affinity_test_fill_command_fn,
};

/* ---- binary API -------------------------------------------------------- */

static void
vl_api_affinity_enable_disable_t_handler (vl_api_affinity_enable_disable_t *mp)
{
  affinity_main_t *am = &affinity_main;
  vl_api_affinity_enable_disable_reply_t *rmp;
  int rv = affinity_enable_disable (ntohl (mp->sw_if_index), mp->enable);
  REPLY_MACRO (VL_API_AFFINITY_ENABLE_DISABLE_REPLY);
}

static void
vl_api_affinity_set_control_t_handler (vl_api_affinity_set_control_t *mp)
{
  affinity_main_t *am = &affinity_main;
  vl_api_affinity_set_control_reply_t *rmp;
  int rv = 0;
  ip4_address_t a;
  ip4_address_decode (mp->agent_address, &a);
  affinity_rs_set_agent_address (a.as_u32);
  u16 port = ntohs (mp->listen_port);
  if (port && port != am->cfg.listen_port)
    {
      udp_register_dst_port (vlib_get_main (), port, am->ctl_node_index, 1);
      am->cfg.listen_port = port;
    }
  REPLY_MACRO (VL_API_AFFINITY_SET_CONTROL_REPLY);
}

static void
vl_api_affinity_set_auth_key_t_handler (vl_api_affinity_set_auth_key_t *mp)
{
  affinity_main_t *am = &affinity_main;
  vl_api_affinity_set_auth_key_reply_t *rmp;
  int rv = affinity_rs_set_auth_key (ntohs (mp->key_id), mp->algorithm,
				     mp->key, clib_min (mp->key_len, 64));
  REPLY_MACRO (VL_API_AFFINITY_SET_AUTH_KEY_REPLY);
}

typedef struct
{
  vl_api_registration_t *reg;
  u32 context;
} affinity_dump_ctx_t;

static void
affinity_send_fixed (void *c, const affinity_fixed_row_t *r)
{
  affinity_dump_ctx_t *ctx = c;
  vl_api_affinity_fixed_details_t *rmp = vl_msg_api_alloc (sizeof (*rmp));
  clib_memset (rmp, 0, sizeof (*rmp));
  rmp->_vl_msg_id =
    htons (VL_API_AFFINITY_FIXED_DETAILS + affinity_main.msg_id_base);
  rmp->context = ctx->context;
  rmp->protocol = r->protocol;
  clib_memcpy (rmp->src_address, &r->src_address, 4);
  clib_memcpy (rmp->dst_address, &r->dst_address, 4);
  rmp->src_port = htons (r->src_port);
  rmp->dst_port = htons (r->dst_port);
  rmp->nat_flags = r->nat_flags;
  clib_memcpy (rmp->nat_src_address, &r->nat_src_address, 4);
  clib_memcpy (rmp->nat_dst_address, &r->nat_dst_address, 4);
  rmp->nat_src_port = htons (r->nat_src_port);
  rmp->nat_dst_port = htons (r->nat_dst_port);
  clib_memcpy (rmp->owner, &r->owner, 4);
  rmp->ttl_remaining_ds = htonl (r->ttl_remaining_ds);
  rmp->packets = clib_host_to_net_u64 (r->packets);
  rmp->bytes = clib_host_to_net_u64 (r->bytes);
  vl_api_send_msg (ctx->reg, (u8 *) rmp);
}

static void
vl_api_affinity_fixed_dump_t_handler (vl_api_affinity_fixed_dump_t *mp)
{
  vl_api_registration_t *reg =
    vl_api_client_index_to_registration (mp->client_index);
  if (!reg)
    return;
  affinity_dump_ctx_t ctx = { .reg = reg, .context = mp->context };
  affinity_rs_fixed_rows (vlib_time_now (vlib_get_main ()),
			  ntohl (mp->max_entries), affinity_send_fixed, &ctx);
}

static void
affinity_send_wildcard (void *c, const affinity_wildcard_row_t *r)
{
  affinity_dump_ctx_t *ctx = c;
  vl_api_affinity_wildcard_details_t *rmp = vl_msg_api_alloc (sizeof (*rmp));
  clib_memset (rmp, 0, sizeof (*rmp));
  rmp->_vl_msg_id =
    htons (VL_API_AFFINITY_WILDCARD_DETAILS + affinity_main.msg_id_base);
  rmp->context = ctx->context;
  clib_memcpy (rmp->owner, &r->owner, 4);
  rmp->id = htonl (r->id);
  rmp->protocol = r->protocol;
  clib_memcpy (rmp->src_address, &r->src_address, 4);
  rmp->src_prefix_len = r->src_prefix_len;
  clib_memcpy (rmp->dst_address, &r->dst_address, 4);
  rmp->dst_prefix_len = r->dst_prefix_len;
  rmp->src_port = htons (r->src_port);
  rmp->dst_port = htons (r->dst_port);
  rmp->service_precedence = htons (r->service_precedence);
  rmp->backup_precedence = htons (r->backup_precedence);
  rmp->interest_mask = htons (r->interest_mask);
  rmp->ttl_remaining_ds = htonl (r->ttl_remaining_ds);
  vl_api_send_msg (ctx->reg, (u8 *) rmp);
}

static void
vl_api_affinity_wildcard_dump_t_handler (vl_api_affinity_wildcard_dump_t *mp)
{
  vl_api_registration_t *reg =
    vl_api_client_index_to_registration (mp->client_index);
  if (!reg)
    return;
  affinity_dump_ctx_t ctx = { .reg = reg, .context = mp->context };
  affinity_rs_wildcard_rows (vlib_time_now (vlib_get_main ()),
			     affinity_send_wildcard, &ctx);
}

static void
vl_api_affinity_counter_dump_t_handler (vl_api_affinity_counter_dump_t *mp)
{
  vl_api_registration_t *reg =
    vl_api_client_index_to_registration (mp->client_index);
  if (!reg)
    return;
  for (u32 i = 0; i < affinity_rs_counter_count (); i++)
    {
      const char *name = affinity_rs_counter_name (i);
      vl_api_affinity_counter_details_t *rmp = vl_msg_api_alloc (sizeof (*rmp));
      clib_memset (rmp, 0, sizeof (*rmp));
      rmp->_vl_msg_id =
	htons (VL_API_AFFINITY_COUNTER_DETAILS + affinity_main.msg_id_base);
      rmp->context = mp->context;
      strncpy ((char *) rmp->name, name, sizeof (rmp->name) - 1);
      rmp->value = clib_host_to_net_u64 (affinity_rs_counter_value (i));
      vl_api_send_msg (reg, (u8 *) rmp);
    }
}

#include <vnet/format_fns.h>
#include <vnet/ip/ip_format_fns.h>
#include <affinity/affinity.api.c>

/* ---- init --------------------------------------------------------------- */

static clib_error_t *
affinity_init (vlib_main_t *vm)
{
  affinity_main_t *am = &affinity_main;
  am->msg_id_base = setup_message_id_table ();
  if (!am->cfg.listen_port)
    am->cfg.listen_port = 1637;
  if (!am->cfg.fixed_table_size)
    am->cfg.fixed_table_size = 1 << 20;
  if (!am->cfg.wildcard_table_size)
    am->cfg.wildcard_table_size = 16384;
  return 0;
}

VLIB_INIT_FUNCTION (affinity_init);

static clib_error_t *
affinity_main_loop_enter (vlib_main_t *vm)
{
  affinity_main_t *am = &affinity_main;
  am->cfg.n_threads = vlib_num_workers () + 1;
  am->cfg.auth_key_file = (const char *) am->key_file;
  vec_add1 (am->disabled_actions, 0);
  am->cfg.disabled_actions = (const char *) am->disabled_actions;
  int rv = affinity_rs_init (&am->cfg);
  if (rv == -2)
    return clib_error_return (0, "affinity: cannot read auth-key-file %s",
			      am->key_file);
  if (rv == -5)
    return clib_error_return (0,
			      "affinity: unknown disable-action name (known: "
			      "nat, advertise, seq-adjust, interest)");
  if (rv != 0)
    return clib_error_return (0, "affinity: initialisation failed (%d)", rv);
  am->initialised = 1;
  am->ctl_node_index = affinity_ctl_node.index;
  udp_register_dst_port (vm, am->cfg.listen_port, affinity_ctl_node.index, 1);
  if (am->cfg.multicast_group)
    {
      /* Join the wildcard group: accept it on any interface and deliver it
	 locally, where udp4-local hands it to the control node. */
      ip4_address_t g = { .as_u32 = am->cfg.multicast_group };
      u8 *cmds[2] = {
	format (0, "ip mroute add %U/32 AA%c", format_ip4_address, &g, 0),
	format (0, "ip mroute add %U/32 via local Forward%c",
		format_ip4_address, &g, 0),
      };
      for (int i = 0; i < 2; i++)
	{
	  unformat_input_t in;
	  unformat_init_string (&in, (char *) cmds[i], strlen ((char *) cmds[i]));
	  vlib_cli_input (vm, &in, 0, 0);
	  unformat_free (&in);
	  vec_free (cmds[i]);
	}
    }
  return 0;
}

VLIB_MAIN_LOOP_ENTER_FUNCTION (affinity_main_loop_enter);

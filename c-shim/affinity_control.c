/*
 * The control side in VPP: the affinity-control-input node (service
 * messages arriving on the agent's UDP port, handed to Rust), the timer
 * process (which sleeps until the core's next deadline), and sending the
 * packets Rust builds.
 */
#include <vnet/ip/ip4.h>
#include <vnet/ip/format.h>
#include <vnet/udp/udp_packet.h>
#include <vnet/udp/udp_local.h>
#include <vnet/fib/fib_table.h>

#include "affinity.h"

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

/* ---- advertising into routing ------------------------------------------ */

void
affinity_shim_advertise (uint32_t address, uint8_t len, uint8_t is_add)
{
  vlib_main_t *vm = vlib_get_main ();
  fib_prefix_t pfx = {
    .fp_proto = FIB_PROTOCOL_IP4,
    .fp_len = clib_min (len, 32),
    .fp_addr.ip4.as_u32 = address,
  };
  /* The FIB is changed with the workers stopped. */
  vlib_worker_thread_barrier_sync (vm);
  if (is_add)
    fib_table_entry_special_add (0, &pfx, affinity_main.fib_source,
				 FIB_ENTRY_FLAG_DROP);
  else
    fib_table_entry_special_remove (0, &pfx, affinity_main.fib_source);
  vlib_worker_thread_barrier_release (vm);
}

/* ---- the control-input node: service messages on the UDP port ----------- */

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
  /* Under the data node's counters, where the core's list lives. Rust
     counts the messages it handles itself (control-messages); a packet
     without a usable IPv4/UDP header never reaches it. */
  vlib_node_increment_counter (vm, affinity_node.index,
			       AFFINITY_ERROR_CONTROL_MESSAGES, n - bad);
  if (bad)
    {
      vlib_node_increment_counter (vm, affinity_node.index,
				   AFFINITY_ERROR_CONTROL_PARSE_ERROR, bad);
      affinity_rs_count (AFFINITY_ERROR_CONTROL_PARSE_ERROR, bad);
    }
  /* New affinities or holds may be due before the timer's next wake. */
  if (n > bad)
    affinity_wake_timers (vm);
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

/* Longest sleep: the wakes above cover every new deadline the core can get
   (control messages, held packets); this bounds the cost of one missed. */
#define AFFINITY_MAX_SLEEP 10.0
/* Shortest: a deadline already due is ticked at once, but a core that kept
   answering "now" must not spin the main thread. */
#define AFFINITY_MIN_SLEEP 1e-3

enum
{
  AFFINITY_EVENT_WAKE = 1,
};

void
affinity_wake_timers (vlib_main_t *vm)
{
  if (vlib_get_thread_index () == 0)
    vlib_process_signal_event (vm, affinity_process_node.index,
			       AFFINITY_EVENT_WAKE, 0);
  else
    vlib_process_signal_event_mt (vm, affinity_process_node.index,
				  AFFINITY_EVENT_WAKE, 0);
}

/* Sleeps until the core's poll_timeout (Agent::poll_timeout), or until
   woken because that may have moved earlier, then ticks. */
static uword
affinity_process (vlib_main_t *vm, vlib_node_runtime_t *rt, vlib_frame_t *f)
{
  f64 sleep = AFFINITY_MIN_SLEEP;
  while (1)
    {
      vlib_process_wait_for_event_or_clock (vm, sleep);
      vlib_process_get_events (vm, 0);
      if (!affinity_main.initialised)
	{
	  /* Until the main loop is entered and the core started. */
	  sleep = 0.1;
	  continue;
	}
      f64 now = vlib_time_now (vm);
      f64 due = affinity_rs_tick (now);
      sleep = due < 0 ? AFFINITY_MAX_SLEEP : due - now;
      sleep = clib_min (clib_max (sleep, AFFINITY_MIN_SLEEP), AFFINITY_MAX_SLEEP);
    }
  return 0;
}

VLIB_REGISTER_NODE (affinity_process_node) = {
  .function = affinity_process,
  .type = VLIB_NODE_TYPE_PROCESS,
  .name = "affinity-process",
};

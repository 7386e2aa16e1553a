"""A fake ERPNext on loopback: the Frappe REST API (v1) for the doctypes and methods a sales
connector uses, with ERPNext's document rules and arithmetic, checked against a real ERPNext.

Ground truth: tests/fixtures/transcripts/erpnext/rest.jsonl, 225 exchanges recorded from a real
ERPNext (frappe/erpnext 16.0.0-dev of 2024-03-13, MariaDB 10.11; README beside it).
tests/unit/test_erpnext_transcripts.py replays every one of them against this fake (seeded with
``seed_like_transcripts``) and requires the same status, error type and text, keys and values.
Each behaviour below cites the transcript step (``[2l]``) or the vendor source it follows.

REST API (https://docs.frappe.io/framework/user/en/api/rest; frappe/api/v1.py, frappe/client.py):
- ``GET /api/resource/<DocType>``: JSON ``fields`` (default ``["name"]``, ``"*"``), ``filters`` /
  ``or_filters`` (``[field, op, value]`` or ``[child doctype, field, op, value]``: a child-table
  filter joins the child table and answers one row per matching child row [5h]), ``order_by``
  (none by default: MariaDB's primary-key order, by name [2h, 2n]), ``limit_start``, ``limit_page_length``
  (default 20, 0 = all). With a child table joined, an ``order_by`` naming a column both tables
  have without its table (``creation asc``) is MariaDB's 500 OperationalError 1052 "Column
  'creation' in ORDER BY is ambiguous" [2l, 2o, 5a]; `` `tabX`.creation asc `` works [2m, 5b].
  Unknown fields: 417 DataError "Field not permitted in query" [8d-8f]; invalid JSON: 500
  JSONDecodeError with Python's message [8g]; unknown doctype: 404 (list) [8a], 500 ImportError
  (one document) [8b].
- ``POST`` creates, ``GET``/``PUT``/``DELETE`` ``/<name>`` (DELETE: 202 ``{"data": "ok"}``).
  ``/api/method/<path>`` answers ``{"message": ...}``; an unknown method is 417 ValidationError
  "Failed to get method ..." [8n].
- Authentication (frappe/auth.py ``validate_api_key_secret``): ``token key:secret`` or Basic of
  the pair; a wrong or malformed pair is 401 AuthenticationError without any message [1b, 1c,
  1i]. No header is Guest: 403 PermissionError (method not whitelisted [1d], no doctype access
  [1e, 1g]) — but a POST's link validation runs first, so an unknown customer is 417 [1f].
- Errors (frappe/exceptions.py, frappe/app.py ``handle_exception``): ``exc_type``, ``exception``
  ("module.Class: text"), ``exc`` (the traceback; here a stand-in), ``_server_messages`` (a JSON
  list of JSON messages) for what was msgprint'ed, ``_exc_source`` "erpnext (app)" when ERPNext's
  code raised it. 404 DoesNotExistError carries no ``exception`` [0g, 3b, 8c], and from DELETE
  only ``exc_type`` [4m, 8p]. MandatoryError names the document as already named, one message per
  field [8h, 8i]; the naming-series number it took is given back [8i].

Documents (frappe/model/document.py, naming.py):
- Naming series ``SAL-ORD-.YYYY.-``, ``ACC-SINV-.YYYY.-``, ``ACC-PAY-.YYYY.-`` (five digits); a
  deleted document that holds the last number gives it back, so the next insert reuses it
  (``revert_series_if_last``) [4j/4n/4t2/5ae, 5g/5z]. Amendments are ``<original>-1``, then
  ``-2`` of the amendment; a second amendment of one original is 409 DuplicateEntryError [4ai].
  ``amended_from`` may name a submitted, not cancelled document [4aa]. Customers are named by
  customer_name, " - 1" on a clash with a yellow "Changed customer name" alert [2e] — but
  concurrent inserts of one new name all pick it, one wins, the others get 409
  DuplicateEntryError [8w] (``hold_commits`` makes that race deterministic).
- docstatus 0 → 1 → 2; a stale ``modified`` is 417 TimestampMismatchError [4q, 4r]; cancelling
  a draft is DocstatusTransitionError [4s]; cancelling twice "Cannot edit cancelled document"
  [4ae]; deleting a submitted document is refused [4x, 5q]; editing a submitted one is
  UpdateAfterSubmitError for any field not allowed on submit, row fields prefixed "Row #n:" [4y]
  (``po_no`` is allowed [4z]). ``frappe.client.submit`` of an already submitted document as last
  answered is refused the same way: the answer carried ``amount_eligible_for_commission`` as an
  unrounded float sum (127.86999999999999), the database keeps 127.87 [4g].

ERPNext (https://github.com/frappe/erpnext):
- Customer quick entry (customer.py): ``email_id``/``mobile_no`` make the primary Contact
  ("<full name>-<customer>"), ``address_line1`` + ``city`` + ``country`` the primary Address
  ("<customer_name>-Billing", "-Billing-1"...); line1 without city is 417 "Following fields are
  mandatory to create address" [2d-2f].
- Sales Order (sales_order.py): delivery date required [8l]; ``validate_po``: another Sales
  Order (not cancelled) with the same ``po_no`` and customer is refused unless Selling Settings
  ``allow_against_multiple_purchase_orders`` [4i, 4j]; quantities in a whole-number UOM must be
  whole (UOMMustBeIntegerError, transaction_base.py) [3d, 3e]; stock rows take the default
  warehouse; the default Sales Taxes and Charges Template is NOT applied to an empty or absent
  tax table over REST [4n, 4t2]; a foreign currency takes its rate from Currency Exchange [7c].
- ``make_sales_invoice`` maps the unbilled part into an unsaved invoice (``__islocal``, no
  ``name``) [5d]; a fully billed order maps no items but its taxes [5o]; a cancelled one is 417
  "Cannot map" [8o]. Drafts do not count as billed [5f]. Cancelling a Sales Order with a draft
  invoice: 417 "must be deleted" [5j]; with a submitted one: LinkExistsError [5p, 6j].
- Sales Invoice (accounts_controller.py ``validate_party_account_currency``): when the customer
  has no ledger entries yet, the party account (the customer's for the company, else the
  company's default receivable) must be in the invoice's currency: 417 "Party Account ...
  currency (USD) and document currency (JPY) should be same" [7c]; with ledger entries it is
  accepted, ``outstanding_amount`` in the party account's (company) currency [7j].
- Credit notes (``make_sales_return``): items keep ``sales_order``, so they appear in the
  order's invoice list [5ac]; with ``update_outstanding_for_self`` (the default) the original
  stays Unpaid [5ab]; without, it goes Partly Paid / Credit Note Issued, possibly below zero
  [5ah, 5al]; a credited invoice cannot be cancelled (LinkExistsError) [5an].
- Payment Entry (``get_payment_entry``): a bank payment needs reference_no/date [6c]; paid and
  partly paid statuses [6f, 6r]; ``get_submitted_linked_docs`` of an invoice does not list its
  payments [6i]; cancelling a paid invoice un-links the payment (Accounts Settings
  ``unlink_payment_on_cancellation_of_invoice``) and succeeds [6k-6m].
- Totals as erpnext/controllers/taxes_and_totals.py computes them (Actual rows distributed with
  the loss on the last item, discount on Net Total, rounding by the currency's smallest fraction
  unless ``disable_rounded_total``; USD 37.65 stays 37.65 [4n]).

Not modelled, beyond what the transcripts show (the connector does not rely on them): stock
ledgers and Delivery Notes (``deliver`` only blocks cancelling, as a submitted Delivery Note
does), pricing rules, tax templates other than none, GL entries beyond "has this customer any",
the values of display-only fields (``in_words``, ``other_charges_calculation``,
``item_wise_tax_detail``, balances, projected quantities: present with neutral values), Tax
Rules, Payment Terms. Concurrency: real deadlocks between concurrent submits are timing-dependent
[8q: 2 of 6; 8s: 0 of 10 in the recorded run, 8 of 10 in an exploratory one]; ``deadlock(n)``
answers the next n submits/inserts with the recorded 500 QueryDeadlockError and rolls them back,
as MariaDB does [8v].

Seed with ``put_item``/``put_customer``/``put_account``/``put_uom``; read back with ``docs``/
``doc``/``sales_orders``; simulate a payment with ``pay`` (a submitted Payment Entry), a delivery
with ``deliver``, a missing role with ``deny``, an answer lost after the work was done with
``lose_answers``, a deadlock with ``deadlock``, a name race with ``hold_commits``. Other faults
come from FakeVendor (``throttle``, ``fail``).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from fakes.vendor import FakeVendor
from flask import Request, Response, g, request

API_KEY = "5e1f0a7c3b2d4e6"
API_SECRET = "9c8b7a6f5e4d3c2b1a0f-secret"
MAKE_INVOICE = "erpnext.selling.doctype.sales_order.sales_order.make_sales_invoice"
MAKE_RETURN = "erpnext.accounts.doctype.sales_invoice.sales_invoice.make_sales_return"
PAYMENT_ENTRY = "erpnext.accounts.doctype.payment_entry.payment_entry.get_payment_entry"
EXCHANGE_RATE = "erpnext.setup.utils.get_exchange_rate"
VERSIONS = "frappe.utils.change_log.get_versions"
LINKED = "frappe.desk.form.linked_with.get_submitted_linked_docs"
STATUS = {"AuthenticationError": 401, "PermissionError": 403, "DoesNotExistError": 404,
          "DuplicateEntryError": 409, "TooManyRequestsError": 429, "SessionStopped": 503,
          "QueryDeadlockError": 500, "OperationalError": 500, "JSONDecodeError": 500,
          "ImportError": 500}
EXC_FOR_STATUS = {401: "AuthenticationError", 403: "PermissionError", 404: "DoesNotExistError",
                  409: "DuplicateEntryError", 429: "TooManyRequestsError", 503: "SessionStopped"}
STANDARD = ("name", "owner", "creation", "modified", "modified_by", "docstatus", "idx")
CHILD_STANDARD = (*STANDARD, "parent", "parentfield", "parenttype")
ERPNEXT = "erpnext (app)"
DEADLOCK = "(1213, 'Deadlock found when trying to get lock; try restarting transaction')"
ALLOW_MULTIPLE = "'Allow Multiple Sales Orders Against a Customer's Purchase Order'"
DELETE_DOC_URL = ("https://docs.erpnext.com//docs/user/manual/en/setting-up/articles/"
                  "delete-submitted-document")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# --- the schema (frappe doctypes as ERPNext 16.0.0-dev defines them, trimmed to what is used) ----
INTS = set(_words("""docstatus idx disabled is_group is_stock_item is_sales_item ignore_pricing_rule
    disable_rounded_total included_in_print_rate is_primary is_primary_contact is_primary_address
    is_shipping_address set_posting_time is_return skip_delivery_note enabled is_primary_phone
    is_primary_mobile_no update_stock is_pos must_be_whole_number for_selling for_buying
    update_outstanding_for_self grant_commission is_cancelled is_internal_customer
    use_serial_batch_fields"""))
MONEY = set(_words("""qty stock_qty conversion_factor price_list_rate discount_percentage
    discount_amount rate amount net_rate net_amount base_rate base_amount base_net_rate
    base_net_amount base_price_list_rate billed_amt delivered_qty returned_qty
    margin_rate_or_amount tax_amount total tax_amount_after_discount_amount base_tax_amount
    base_total base_tax_amount_after_discount_amount conversion_rate plc_conversion_rate
    additional_discount_percentage base_discount_amount total_qty net_total base_net_total
    total_taxes_and_charges base_total_taxes_and_charges grand_total base_grand_total
    rounding_adjustment base_rounding_adjustment rounded_total base_rounded_total per_billed
    per_delivered outstanding_amount paid_amount standard_rate smallest_currency_fraction_value
    exchange_rate received_amount base_paid_amount base_received_amount unallocated_amount
    total_allocated_amount base_total_allocated_amount difference_amount total_amount
    allocated_amount stock_uom_rate amount_eligible_for_commission invoice_portion
    payment_amount outstanding base_payment_amount source_exchange_rate target_exchange_rate
    debit credit debit_in_account_currency credit_in_account_currency"""))
_ITEM = list(_words("""item_code item_name description item_group qty stock_uom uom
    conversion_factor stock_qty price_list_rate base_price_list_rate discount_percentage
    discount_amount rate amount net_rate net_amount base_rate base_amount base_net_rate
    base_net_amount warehouse margin_type margin_rate_or_amount stock_uom_rate grant_commission
    is_stock_item"""))
_SELLING = list(_words("""naming_series customer customer_name company currency conversion_rate
    selling_price_list price_list_currency plc_conversion_rate ignore_pricing_rule po_no po_date
    customer_address shipping_address_name contact_person customer_group territory
    taxes_and_charges apply_discount_on additional_discount_percentage discount_amount
    base_discount_amount total_qty total base_total net_total base_net_total
    total_taxes_and_charges base_total_taxes_and_charges grand_total base_grand_total
    rounding_adjustment base_rounding_adjustment rounded_total base_rounded_total
    disable_rounded_total status amended_from contact_display contact_mobile contact_email
    address_display shipping_address amount_eligible_for_commission language"""))
META: dict[str, dict[str, Any]] = {
    "Company": {"fields": list(_words("""company_name abbr default_currency country is_group
        round_off_account default_receivable_account cost_center"""))},
    "Country": {"fields": ["country_name", "code"]},
    "Currency": {"fields": ["currency_name", "number_format", "smallest_currency_fraction_value",
                            "enabled"]},
    "UOM": {"fields": ["uom_name", "must_be_whole_number", "enabled"]},
    "Currency Exchange": {"fields": ["date", "from_currency", "to_currency", "exchange_rate",
                                     "for_selling", "for_buying"]},
    "Account": {"fields": list(_words("""account_name company account_type root_type is_group
        account_currency disabled"""))},
    "Customer Group": {"fields": ["customer_group_name", "is_group"]},
    "Territory": {"fields": ["territory_name", "is_group"]},
    "Price List": {"fields": ["price_list_name", "currency", "selling", "enabled"]},
    "Warehouse": {"fields": ["warehouse_name", "company", "is_group"]},
    "Sales Taxes and Charges Template": {"fields": ["title", "company", "is_default"]},
    "Item": {"fields": list(_words("""item_code item_name item_group description stock_uom
        is_stock_item is_sales_item disabled standard_rate""")),
             "tables": {"uoms": "UOM Conversion Detail", "taxes": "Item Tax"}},
    "Customer": {"fields": list(_words("""naming_series customer_name customer_type customer_group
        territory email_id mobile_no customer_primary_contact customer_primary_address
        primary_address tax_id disabled default_currency customer_details language""")),
                 "tables": {"accounts": "Party Account"}},
    "Contact": {"fields": list(_words("""first_name middle_name last_name full_name company_name
        email_id phone mobile_no is_primary_contact status""")),
                "tables": {"email_ids": "Contact Email", "phone_nos": "Contact Phone",
                           "links": "Dynamic Link"}},
    "Address": {"fields": list(_words("""address_title address_type address_line1 address_line2
        city county state country pincode email_id phone is_primary_address is_shipping_address
        disabled""")),
                "tables": {"links": "Dynamic Link"}},
    "Sales Order": {"fields": [*_SELLING, *_words("""title order_type transaction_date
        delivery_date set_warehouse skip_delivery_note billing_status delivery_status per_billed
        per_delivered""")],
                    "tables": {"items": "Sales Order Item", "taxes": "Sales Taxes and Charges",
                               "payment_schedule": "Payment Schedule"},
                    "submittable": True, "series": "SAL-ORD-.YYYY.-"},
    "Sales Invoice": {"fields": [*_SELLING, *_words("""posting_date due_date set_posting_time
        debit_to party_account_currency outstanding_amount paid_amount is_return return_against
        update_outstanding_for_self is_pos update_stock""")],
                      "tables": {"items": "Sales Invoice Item", "taxes": "Sales Taxes and Charges",
                                 "payment_schedule": "Payment Schedule"},
                      "submittable": True, "series": "ACC-SINV-.YYYY.-"},
    "Payment Entry": {"fields": list(_words("""naming_series payment_type posting_date company
        party_type party party_name contact_person contact_email paid_from
        paid_from_account_currency paid_to paid_to_account_currency paid_amount received_amount
        base_paid_amount base_received_amount source_exchange_rate target_exchange_rate
        total_allocated_amount base_total_allocated_amount unallocated_amount difference_amount
        total_taxes_and_charges base_total_taxes_and_charges reference_no reference_date status
        mode_of_payment amended_from""")),
                      "tables": {"references": "Payment Entry Reference"},
                      "submittable": True, "series": "ACC-PAY-.YYYY.-"},
    "GL Entry": {"fields": list(_words("""posting_date account party_type party company
        account_currency debit credit voucher_type voucher_no is_cancelled"""))},
}
SINGLES = {
    "Selling Settings": {"allow_against_multiple_purchase_orders": 0, "customer_group": "Individual",
                         "territory": "All Territories", "cust_master_name": "Customer Name"},
    "Accounts Settings": {"unlink_payment_on_cancellation_of_invoice": 1,
                          "allow_multi_currency_invoices_against_single_party_account": 0},
    "Stock Settings": {"default_warehouse": None},
}
CHILD_META: dict[str, list[str]] = {
    "Contact Email": ["email_id", "is_primary"],
    "Contact Phone": ["phone", "is_primary_phone", "is_primary_mobile_no"],
    "Dynamic Link": ["link_doctype", "link_name", "link_title"],
    "UOM Conversion Detail": ["uom", "conversion_factor"],
    "Item Tax": ["item_tax_template"],
    "Party Account": ["company", "account"],
    "Sales Order Item": [*_ITEM, "delivery_date", "billed_amt", "delivered_qty", "returned_qty",
                         "transaction_date"],
    "Sales Invoice Item": [*_ITEM, "sales_order", "so_detail", "income_account", "cost_center",
                           "sales_invoice_item", "expense_account", "delivered_qty",
                           "use_serial_batch_fields"],
    "Sales Taxes and Charges": list(_words("""charge_type row_id account_head description
        included_in_print_rate cost_center rate tax_amount total tax_amount_after_discount_amount
        base_tax_amount base_total base_tax_amount_after_discount_amount item_wise_tax_detail
        account_currency""")),
    "Payment Schedule": list(_words("""due_date invoice_portion payment_amount outstanding
        paid_amount base_payment_amount""")),
    "Payment Entry Reference": list(_words("""reference_doctype reference_name due_date
        total_amount outstanding_amount allocated_amount exchange_rate account""")),
}
# Fields ERPNext answers with that nothing here computes: present, with neutral values, so that
# an answer has the real answer's shape (transcript exchanges 2d, 4b, 5d and 6b keep them all).
_NEUTRAL = {
    "Customer": ("default_commission_rate", """is_internal_customer so_required dn_required
        exempt_from_sales_tax is_frozen""", "", "portal_users credit_limits sales_team companies"),
    "Sales Order": ("""total_net_weight advance_paid per_picked commission_rate total_commission
        loyalty_amount""", """reserve_stock exempt_from_sales_tax loyalty_points group_same_items
        is_internal_customer""",
                    """tax_category other_charges_calculation contact_phone
        advance_payment_status""", "pricing_rules packed_items sales_team"),
    "Sales Order Item": ("""stock_reserved_qty rate_with_margin base_rate_with_margin
        valuation_rate weight_per_unit total_weight blanket_order_rate projected_qty
        actual_qty ordered_qty planned_qty production_plan_qty work_order_qty produced_qty
        picked_qty""", """ensure_delivery_based_on_produced_serial_no reserve_stock is_free_item
        delivered_by_supplier against_blanket_order page_break""", "image item_tax_rate", ""),
    "Sales Taxes and Charges": ("", "included_in_paid_amount dont_recompute_tax", "", ""),
    "Payment Schedule": ("discount discounted_amount", "", "", ""),
    "Sales Invoice": ("""total_net_weight total_advance total_billing_hours total_billing_amount
        base_change_amount change_amount write_off_amount base_paid_amount base_write_off_amount
        loyalty_amount
        commission_rate total_commission""", """is_consolidated
        update_billed_amount_in_sales_order update_billed_amount_in_delivery_note is_debit_note
        exempt_from_sales_tax use_company_roundoff_cost_center is_cash_or_non_trade_discount
        allocate_advances_automatically only_include_allocated_payments
        write_off_outstanding_amount_automatically redeem_loyalty_points loyalty_points
        dont_create_loyalty_points ignore_default_payment_terms_template group_same_items
        is_internal_customer is_discounted repost_required""", """posting_time tax_category
        other_charges_calculation is_opening""",
                      "pricing_rules timesheets advances packed_items sales_team payments"),
    "Sales Invoice Item": ("""rate_with_margin base_rate_with_margin weight_per_unit total_weight
        incoming_rate actual_batch_qty actual_qty""", """has_item_scanned is_free_item
        delivered_by_supplier is_fixed_asset enable_deferred_revenue use_serial_batch_fields
        allow_zero_valuation_rate page_break""", "image item_tax_rate", ""),
    "Payment Entry": ("""party_balance paid_from_account_balance paid_to_account_balance
        paid_amount_after_tax base_paid_amount_after_tax received_amount_after_tax
        base_received_amount_after_tax""", """book_advance_payments_in_separate_party_account
        apply_tax_withholding_amount custom_remarks""", "payment_order_status",
                      "taxes deductions"),
    "Payment Entry Reference": ("exchange_gain_loss", "", "", ""),
}
NEUTRAL: dict[str, dict[str, Any]] = {
    doctype: {**{k: Decimal(0) for k in _words(nums)}, **{k: 0 for k in _words(ints)},
              **{k: "" for k in _words(strs)}, **{k: [] for k in _words(tables)}}
    for doctype, (nums, ints, strs, tables) in _NEUTRAL.items()}
NEUTRAL_VALUES = {"item_tax_rate": "{}", "payment_order_status": "Initiated", "is_opening": "No",
                  "advance_payment_status": "Not Requested", "contact_phone": ""}
LINKS = {  # (doctype, field) -> linked doctype, in the order Frappe validates them
    ("Customer", "customer_group"): "Customer Group", ("Customer", "territory"): "Territory",
    ("Address", "country"): "Country",
    ("Sales Order", "customer"): "Customer", ("Sales Order", "company"): "Company",
    ("Sales Order", "selling_price_list"): "Price List", ("Sales Order", "currency"): "Currency",
    ("Sales Order", "set_warehouse"): "Warehouse", ("Sales Order", "customer_address"): "Address",
    ("Sales Order", "shipping_address_name"): "Address",
    ("Sales Invoice", "customer"): "Customer", ("Sales Invoice", "company"): "Company",
    ("Sales Invoice", "currency"): "Currency", ("Sales Invoice", "debit_to"): "Account",
    ("Sales Invoice", "customer_address"): "Address",
    ("Sales Invoice", "shipping_address_name"): "Address",
    ("Sales Invoice", "selling_price_list"): "Price List",
    ("Payment Entry", "company"): "Company", ("Payment Entry", "paid_from"): "Account",
    ("Payment Entry", "paid_to"): "Account",
    ("Sales Order Item", "item_code"): "Item", ("Sales Order Item", "warehouse"): "Warehouse",
    ("Sales Invoice Item", "item_code"): "Item", ("Sales Invoice Item", "sales_order"): "Sales Order",
    ("Sales Invoice Item", "income_account"): "Account",
    ("Sales Taxes and Charges", "account_head"): "Account",
}
MANDATORY = {
    "Customer": [("customer_name", "Customer Name")],
    "Item": [("item_code", "Item Code"), ("item_group", "Item Group"),
             ("stock_uom", "Default Unit of Measure")],
    "Address": [("address_type", "Address Type"), ("address_line1", "Address Line 1"),
                ("city", "City/Town"), ("country", "Country")],
    "Sales Order": [("customer", "Customer"), ("transaction_date", "Date"),
                    ("company", "Company"), ("currency", "Currency"), ("items", "Items")],
    "Sales Invoice": [("customer", "Customer"), ("posting_date", "Date"),
                      ("company", "Company"), ("currency", "Currency"), ("items", "Items")],
    "Payment Entry": [("payment_type", "Payment Type"), ("company", "Company"),
                      ("paid_from", "Account Paid From"), ("paid_to", "Account Paid To"),
                      ("paid_amount", "Paid Amount")],
    "Sales Order Item": [("item_code", "Item Code"), ("qty", "Quantity"), ("rate", "Rate")],
    "Sales Invoice Item": [("item_code", "Item"), ("qty", "Quantity"), ("rate", "Rate")],
    "Sales Taxes and Charges": [("charge_type", "Type"), ("account_head", "Account Head"),
                                ("description", "Description")],
}
ALLOW_ON_SUBMIT = set(_words("""po_no po_date delivery_date status billing_status delivery_status
    per_billed per_delivered modified modified_by docstatus outstanding_amount paid_amount
    due_date remarks"""))
LABELS = {"qty": "Quantity", "rate": "Rate", "amount": "Amount", "item_code": "Item Code",
          "amount_eligible_for_commission": "Amount Eligible for Commission",
          "customer": "Customer", "grand_total": "Grand Total", "tax_amount": "Amount",
          "discount_amount": "Additional Discount Amount", "currency": "Currency",
          "account_head": "Account Head", "price_list_rate": "Price List Rate",
          "conversion_rate": "Exchange Rate", "net_total": "Net Total", "total": "Total"}
CHARGE_TYPES = ("Actual", "On Net Total", "On Previous Row Amount", "On Previous Row Total",
                "On Item Quantity")
COUNTRIES = {"us": "United States", "de": "Germany", "fr": "France", "gb": "United Kingdom",
             "jp": "Japan", "kw": "Kuwait", "ch": "Switzerland", "ca": "Canada", "br": "Brazil"}
CURRENCIES = {"USD": ("#,###.##", "0.01"), "EUR": ("#.###,##", "0.01"), "JPY": ("#,###", "1"),
              "KWD": ("#,###.###", "0.001"), "CHF": ("#'###.##", "0.05"), "GBP": ("#,###.##", "0.01")}
NUMBER_FORMATS = {"#,###.##": 2, "#.###,##": 2, "# ###.##": 2, "# ###,##": 2, "#'###.##": 2,
                  "#, ###.##": 2, "#,##,###.##": 2, "#,###.###": 3, "#.###": 0, "#,###": 0}
_OPS = ("=", "!=", "<", ">", "<=", ">=", "like", "not like", "in", "not in", "is", "between")
_SHARED_COLUMNS = set(STANDARD)  # columns every table has: ambiguous when a child table is joined


class FrappeError(Exception):
    """An exception as Frappe answers it.

    `message` is msgprint'ed (``_server_messages``) and ends the ``exception`` text; `exception`
    overrides that text, `messages` the msgprint'ed list; `quiet` raises without msgprint,
    `bare` answers ``exc_type`` (and messages) without ``exception``/``exc`` (404s).
    """

    def __init__(self, exc_type: str, message: str = "", *, status: int | None = None,
                 title: str | None = None, module: str = "frappe.exceptions",
                 source: str | None = None, exception: str | None = None,
                 messages: list[str] | None = None, quiet: bool = False, bare: bool = False,
                 error_message: str | None = None) -> None:
        super().__init__(message)
        self.exc_type, self.message, self.title = exc_type, message, title
        self.status = status or STATUS.get(exc_type, 417)
        self.module, self.source, self.bare = module, source, bare
        self.exception = exception if exception is not None else message
        self.messages = messages if messages is not None else ([] if quiet or not message
                                                               else [message])
        self.error_message = error_message


def _dec(value: Any) -> Decimal:
    if value in (None, ""):
        return Decimal(0)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise FrappeError("ValidationError", f"{value!r} is not a number") from None


def _round(value: Decimal, places: int) -> Decimal:
    """frappe.utils.flt(value, precision) with the default banker's rounding."""
    return value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)


def _dumps(value: Any) -> str:
    """Frappe's JSON: numbers as numbers (Decimals exactly, floats as Python prints them)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, Decimal):
        return format(value.normalize() if value == value.to_integral() else value, "f")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    if isinstance(value, datetime | date):
        return json.dumps(str(value))
    return json.dumps(value)


def _shown(value: Any) -> str:
    """How Frappe prints a value in "from X to Y" messages (floats as floats)."""
    if isinstance(value, Decimal):
        return repr(float(value))
    return str(value)


def _link(doctype: str, name: str) -> str:
    return f'<a href="/app/Form/{doctype}/{name}">{name}</a>'


def _strong(text: Any) -> str:
    return f"<strong>{text}</strong>"


def seed_like_transcripts(erp: FakeErpNext) -> None:
    """What the recorded ERPNext held before the recording (transcripts README, "What answered")."""
    erp.put_account("Sales Tax Payable - HC", account_type="Tax", root_type="Liability")
    erp.put_account("Shipping Income - HC", account_type="Income Account", root_type="Income")
    erp.put_account("Bank Account - HC", account_type="Bank", root_type="Asset")
    erp.put_item("SKU-001", "Blue Widget", standard_rate=Decimal("12.50"), is_stock_item=1)
    erp.put_item("SKU-002", "Red Gadget", standard_rate=Decimal("30.00"), is_stock_item=1)
    erp.put_item("SKU-003", "Installation", standard_rate=Decimal("80.00"), is_stock_item=0,
                 item_group="Services")
    erp.put_uom("Unit", whole=True)
    erp.put_uom("Hour", whole=False)
    erp.put_tax_template("US ST 6% - HC", default=True)
    known = erp.put_customer("Known Customer GmbH", email="known@example.com",
                             address={"address_line1": "1 Known Street", "city": "Berlin",
                                      "country": "Germany"})
    erp.store["Address"][known["customer_primary_address"]]["is_shipping_address"] = 0
    erp.put_exchange_rate("JPY", "USD", Decimal("0.0067"), on="2026-01-01")


class FakeErpNext(FakeVendor):
    name = "erpnext"

    def __init__(self, api_key: str = API_KEY, api_secret: str = API_SECRET, *,
                 user: str = "fobo-api@example.com", company: str = "FOBO Trading",
                 abbr: str = "FT", currency: str = "USD") -> None:
        self.api_key, self.api_secret, self.user = api_key, api_secret, user
        self.company, self.abbr, self.currency = company, abbr, currency
        self.store: dict[str, dict[str, dict[str, Any]]] = {dt: {} for dt in META}
        self.settings: dict[str, dict[str, Any]] = json.loads(json.dumps(SINGLES))
        self.series: dict[str, int] = {}
        self.denied: set[tuple[str, str]] = set()
        self.exchange_rates: dict[str, Decimal] = {}
        self.deliveries: dict[str, list[str]] = {}
        self.today: Callable[[], date] = date.today  # the day documents are dated (a replay sets it)
        self._lost: list[tuple[str, str]] = []
        self._post: list[Any] = []  # ledger updates Frappe makes after the document is answered
        self._deadlocks = 0
        self._holds: dict[str, threading.Barrier] = {}
        self._clock = datetime(2026, 1, 1)
        self._db = threading.RLock()
        super().__init__()
        self.app.after_request(self._lose_answer)
        self._seed()

    # --- seeding and reading back (tests) -------------------------------------------------
    def _seed(self) -> None:
        for code, name in COUNTRIES.items():
            self._raw("Country", name, country_name=name, code=code)
        for code, (number_format, fraction) in CURRENCIES.items():
            self._raw("Currency", code, currency_name=code, number_format=number_format,
                      smallest_currency_fraction_value=Decimal(fraction), enabled=1)
        self.put_uom("Nos", whole=True)
        for name in ("All Customer Groups", "Individual", "Commercial"):
            self._raw("Customer Group", name, customer_group_name=name, is_group=0)
        self._raw("Territory", "All Territories", territory_name="All Territories", is_group=0)
        self._raw("Company", self.company, company_name=self.company, abbr=self.abbr,
                  default_currency=self.currency, country="United States", is_group=0,
                  round_off_account=f"Round Off - {self.abbr}",
                  default_receivable_account=f"Debtors - {self.abbr}",
                  cost_center=f"Main - {self.abbr}")
        self._raw("Price List", "Standard Selling", price_list_name="Standard Selling",
                  currency=self.currency, selling=1, enabled=1)
        self._raw("Warehouse", f"Stores - {self.abbr}", warehouse_name="Stores",
                  company=self.company, is_group=0)
        self.settings["Stock Settings"]["default_warehouse"] = f"Stores - {self.abbr}"
        for account, kind, root in (("Debtors", "Receivable", "Asset"),
                                    ("Sales", "Income Account", "Income"),
                                    ("Sales Tax", "Tax", "Liability"), ("VAT", "Tax", "Liability"),
                                    ("Freight and Forwarding Charges", "Chargeable", "Expense"),
                                    ("Round Off", "Round Off", "Expense"),
                                    ("Cash", "Cash", "Asset"),
                                    ("Cost of Goods Sold", "Cost of Goods Sold", "Expense")):
            self.put_account(f"{account} - {self.abbr}", account_type=kind, root_type=root)

    def _raw(self, doctype: str, name: str, **values: Any) -> dict[str, Any]:
        doc = {"name": name, "owner": "Administrator", "creation": self._now(),
               "modified": self._now(), "modified_by": "Administrator", "docstatus": 0, "idx": 0,
               "doctype": doctype, **values}
        self.store[doctype][name] = doc
        return doc

    def put_account(self, name: str, **values: Any) -> dict[str, Any]:
        values.setdefault("account_currency", self.currency)
        return self._raw("Account", name, account_name=name.rsplit(" - ", 1)[0],
                         company=self.company, is_group=0, disabled=0, **values)

    def put_uom(self, name: str, *, whole: bool) -> dict[str, Any]:
        return self._raw("UOM", name, uom_name=name, must_be_whole_number=int(whole), enabled=1)

    def put_tax_template(self, name: str, *, default: bool) -> dict[str, Any]:
        """A Sales Taxes and Charges Template; ERPNext does not apply it over REST [4n, 4t2]."""
        return self._raw("Sales Taxes and Charges Template", name, title=name.rsplit(" - ", 1)[0],
                         company=self.company, is_default=int(default))

    def put_exchange_rate(self, from_currency: str, to_currency: str, rate: Decimal,
                          on: str = "2026-01-01") -> None:
        self._raw("Currency Exchange", f"{on}-{from_currency}-{to_currency}-Selling-Buying",
                  date=on, from_currency=from_currency, to_currency=to_currency,
                  exchange_rate=Decimal(rate), for_selling=1, for_buying=1)
        if to_currency == self.currency:
            self.exchange_rates[from_currency] = Decimal(rate)

    def put_item(self, item_code: str, item_name: str | None = None, **values: Any) -> dict[str, Any]:
        """An Item named by its code (ERPNext's default "Item Naming By: Item Code")."""
        with self._db:
            if item_code in self.store["Item"]:
                return self.store["Item"][item_code]
            fields_ = {"item_code": item_code, "item_name": item_name or item_code,
                       "description": item_name or item_code, "item_group": "Products",
                       "stock_uom": "Nos", "is_stock_item": 0, "is_sales_item": 1, "disabled": 0,
                       "standard_rate": Decimal(0), **values}
            fields_["uoms"] = [{"name": secrets.token_hex(5), "idx": 1, "uom": fields_["stock_uom"],
                                "conversion_factor": Decimal(1), "doctype": "UOM Conversion Detail"}]
            fields_["taxes"] = []
            return self._raw("Item", fields_.pop("name", item_code), **fields_)

    def put_customer(self, customer_name: str, email: str | None = None, *,
                     address: Mapping[str, Any] | None = None, **values: Any) -> dict[str, Any]:
        """A customer entered by hand (quick entry: the email makes the primary Contact)."""
        body = {"customer_name": customer_name, "customer_type": "Individual", **values,
                **(address or {})}
        if email:
            body["email_id"] = email
        with self._db, self.app.test_request_context():
            g.user, g.messages = "Administrator", []
            return self._insert("Customer", body)

    def docs(self, doctype: str) -> list[dict[str, Any]]:
        with self._db:
            return [json.loads(_dumps(d), parse_float=Decimal) for d in self.store[doctype].values()]

    def doc(self, doctype: str, name: str) -> dict[str, Any]:
        with self._db:
            return json.loads(_dumps(self.store[doctype][name]), parse_float=Decimal)

    def sales_orders(self, po_no: str) -> list[dict[str, Any]]:
        return [d for d in self.docs("Sales Order") if d.get("po_no") == po_no]

    def invoices_of(self, sales_order: str) -> list[dict[str, Any]]:
        return [d for d in self.docs("Sales Invoice")
                if any(i.get("sales_order") == sales_order for i in d["items"])]

    def pay(self, invoice: str, amount: Decimal | str) -> str:
        """A submitted Payment Entry against the invoice (lowers its outstanding amount)."""
        with self._db, self.app.test_request_context():
            g.user, g.messages = "Administrator", []
            entry = self._payment_entry("Sales Invoice", invoice, _dec(amount))
            entry.update(reference_no=f"PAY-{invoice}", reference_date=self.today().isoformat())
            saved = self._insert("Payment Entry", entry)
            return self._submit("Payment Entry", saved)["name"]

    def deliver(self, sales_order: str) -> str:
        """A submitted Delivery Note against the order: it can no longer be cancelled as is."""
        with self._db:
            name = f"MAT-DN-{self.today().year}-{sum(map(len, self.deliveries.values())) + 1:05d}"
            self.deliveries.setdefault(sales_order, []).append(name)
            return name

    def deny(self, doctype: str, ptype: str) -> None:
        """The API user lacks a permission (read, create, write, submit, cancel, delete)."""
        self.denied.add((doctype, ptype))

    def lose_answers(self, path_part: str, method: str = "POST", times: int = 1) -> None:
        """Do the work, then answer 504 as a proxy whose upstream was too slow."""
        with self._lock:
            self._lost += [(method, path_part)] * times

    def deadlock(self, times: int = 1) -> None:
        """The next `times` submits or inserts die in a MariaDB deadlock (500, rolled back) [8q]."""
        with self._lock:
            self._deadlocks += times

    def hold_commits(self, doctype: str, parties: int) -> None:
        """The next `parties` inserts of `doctype` name themselves, then wait for each other
        before committing: concurrent transactions that cannot see each other's rows [8w]."""
        self._holds[doctype] = threading.Barrier(parties, timeout=30)

    # --- FakeVendor hooks -------------------------------------------------------------------
    def routes(self) -> None:
        app = self.app
        app.add_url_rule("/api/method/<path:method>", "method", self._method,
                         methods=["GET", "POST"])
        app.add_url_rule("/api/resource/<doctype>", "list", self._list, methods=["GET"])
        app.add_url_rule("/api/resource/<doctype>", "create", self._create, methods=["POST"])
        app.add_url_rule("/api/resource/<doctype>/<path:name>", "read", self._read,
                         methods=["GET"])
        app.add_url_rule("/api/resource/<doctype>/<path:name>", "update", self._update,
                         methods=["PUT"])
        app.add_url_rule("/api/resource/<doctype>/<path:name>", "delete", self._delete,
                         methods=["DELETE"])
        app.register_error_handler(FrappeError, self._frappe_error)

    def authorized(self, req: Request) -> bool:
        header = req.headers.get("Authorization", "")
        g.user, g.messages = "Guest", []
        if not header:
            return True
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                token = base64.b64decode(token).decode()
            except ValueError:
                return False
        elif scheme.lower() != "token":
            return False
        key, _, secret = token.partition(":")
        if key == self.api_key and secrets.compare_digest(secret, self.api_secret):
            g.user = self.user
            return True
        return False

    def error(self, status: int, message: str) -> Response:
        exc_type = EXC_FOR_STATUS.get(status, "ValidationError" if status == 417 else "Exception")
        if status == 401:  # validate_api_key_secret raises the bare class: no message [1b]
            message = ""
        return self._frappe_error(FrappeError(exc_type, message, status=status))

    def _frappe_error(self, exc: FrappeError) -> Response:
        body: dict[str, Any] = {}
        if not exc.bare:
            text = f"{exc.module}.{exc.exc_type}" if exc.module else exc.exc_type
            body["exception"] = text + (f": {exc.exception}" if exc.exception else "")
        body["exc_type"] = exc.exc_type
        if exc.source:
            body["_exc_source"] = exc.source
        if not exc.bare:
            body["exc"] = json.dumps([f'  File "apps/frappe/frappe/app.py", in fake\n'
                                      f'{body["exception"]}'])
        messages = list(getattr(g, "messages", []))
        for text in exc.messages:
            messages.append({"message": text, "title": exc.title or "Message",
                             "indicator": "red", "raise_exception": 1,
                             "__frappe_exc_id": secrets.token_hex(28)})
        if messages:
            body["_server_messages"] = json.dumps([json.dumps(m) for m in messages])
        if exc.error_message:
            body["_error_message"] = exc.error_message
        return Response(_dumps(body), status=exc.status, mimetype="application/json")

    def _answer(self, key: str, value: Any, status: int = 200) -> Response:
        body: dict[str, Any] = {key: value}
        if getattr(g, "messages", None):
            body["_server_messages"] = json.dumps([json.dumps(m) for m in g.messages])
        return Response(_dumps(body), status=status, mimetype="application/json")

    def _lose_answer(self, response: Response) -> Response:
        with self._lock:
            match = next((f for f in self._lost if f[0] == request.method and f[1] in request.path),
                         None)
            if match is None or response.status_code >= 400:
                return response
            self._lost.remove(match)
        return Response("<html><body><h1>504 Gateway Time-out</h1></body></html>", status=504,
                        mimetype="text/html")

    # --- routes -------------------------------------------------------------------------------
    def _user(self, doctype: str | None = None, ptype: str = "read") -> None:
        if g.user == "Guest":
            if doctype is None:
                raise FrappeError("PermissionError", status=403, title="Method Not Allowed",
                                  message="<details><summary>You are not permitted to access this "
                                  f"resource.</summary>Function <strong>{request.path.rsplit('/', 1)[-1]}"
                                  "</strong> is not whitelisted.</details>")
            text = (f"User {_strong('Guest')} does not have doctype access via role permission "
                    f"for document {_strong(doctype)}")
            if ptype == "read":
                raise FrappeError("PermissionError", exception="", messages=[text],
                                  error_message=f"No permission for {doctype}")
            raise FrappeError("PermissionError", exception="", messages=[
                f"{text}<br>User {_strong('Guest')} does not have access to this document"],
                error_message=f"Insufficient Permission for {doctype} ({_strong(ptype)})")
        if doctype and (doctype, ptype) in self.denied:
            raise FrappeError("PermissionError", exception="", messages=[
                f"User {_strong(g.user)} does not have doctype access via role permission for "
                f"document {_strong(doctype)}"],
                error_message=f"Insufficient Permission for {doctype} ({_strong(ptype)})")

    def _meta(self, doctype: str, *, one: bool = False) -> dict[str, Any]:
        if doctype in META:
            return META[doctype]
        if one:  # frappe.get_doc imports the controller first [8b]
            module = doctype.lower().replace(" ", "_")
            raise FrappeError("ImportError", module="", status=500, exception=(
                f"Module import failed for {doctype}, the DocType you're trying to open might be "
                f"deleted.<br> Error: No module named 'frappe.core.doctype.{module}'"))
        raise FrappeError("DoesNotExistError", f"DocType {doctype} not found", bare=True)

    def _list(self, doctype: str) -> Response:
        self._meta(doctype)
        self._user(doctype, "read")
        meta = self._meta(doctype)
        args = request.args
        fields_ = _json_arg(args.get("fields"), ["name"])
        filters = _json_arg(args.get("filters"), [])
        or_filters = _json_arg(args.get("or_filters"), [])
        limit = int(args.get("limit_page_length") or args.get("limit") or 20)
        start = int(args.get("limit_start") or 0)
        columns = [*STANDARD, *meta["fields"]]
        wanted = columns if fields_ in (["*"], "*") else fields_
        for name in wanted:
            if name not in columns:
                raise FrappeError("DataError", f"Field not permitted in query: {name}")
        conditions = _conditions(doctype, filters) + _conditions(doctype, or_filters)
        # no order_by: frappe.client.get_list passes none, MariaDB answers in primary-key order
        order_by = args.get("order_by") or ""
        if order_by and any(c[0] != doctype for c in conditions):  # a child table is joined
            for part in order_by.split(","):
                column = part.strip().split(" ")[0]
                if "." not in column and column.strip("`") in _SHARED_COLUMNS:
                    raise FrappeError("OperationalError", module="pymysql.err", status=500,
                                      exception=f"(1052, \"Column '{column.strip('`')}' in ORDER "
                                                "BY is ambiguous\")")
        with self._db:
            rows = []
            for doc in self.store[doctype].values():
                for _ in range(self._matches(doctype, doc, filters, or_filters)):
                    rows.append({**{k: self._column(doc, k) for k in wanted}, "__sort": doc})
        rows = _sorted(rows, order_by or "name asc")
        for row in rows:
            row.pop("__sort", None)
        rows = rows[start:start + limit] if limit else rows[start:]
        return self._answer("data", rows)

    @staticmethod
    def _column(doc: Mapping[str, Any], key: str) -> Any:
        value = doc.get(key)
        if value is None and key in MONEY:
            return Decimal(0)
        if isinstance(value, float):
            return Decimal(repr(value))
        return value

    def _create(self, doctype: str) -> Response:
        self._meta(doctype)
        body = _body()
        body.pop("doctype", None)
        with self._db:
            if g.user == "Guest":  # link validation runs before the permission check [1f]
                doc = self._coerce(doctype, body)
                self._links(doctype, doc)
            self._user(doctype, "create")
            return self._answer("data", self._out(self._insert(doctype, body), nulls=False,
                                                  fresh=True))

    def _read(self, doctype: str, name: str) -> Response:
        if doctype in SINGLES:
            self._user(doctype, "read")
            return self._answer("data", {"name": doctype, "doctype": doctype,
                                         **self.settings[doctype]})
        self._meta(doctype, one=True)
        self._user(doctype, "read")
        with self._db:
            return self._answer("data", self._out(self._get(doctype, name), nulls=False))

    def _update(self, doctype: str, name: str) -> Response:
        self._meta(doctype, one=True)
        self._user(doctype, "write")
        body = _body()
        body.pop("flags", None)
        with self._db:
            stored = self._stored(doctype, name)
            merged = {**stored, **body}
            return self._answer("data", self._out(self._save(doctype, merged, stored=stored),
                                                  nulls=False, fresh=True))

    def _delete(self, doctype: str, name: str) -> Response:
        self._meta(doctype, one=True)
        self._user(doctype, "delete")
        with self._db:
            doc = self.store[doctype].get(name)
            if doc is None:
                raise FrappeError("DoesNotExistError", quiet=True, bare=True)  # [4m, 8p]
            if doc["docstatus"] == 1:
                raise FrappeError("ValidationError", f"{doctype} {name}: Submitted Record cannot be "
                                  f"deleted. You must <a href='{DELETE_DOC_URL}' target='_blank'> "
                                  "Cancel </a> it first.")
            if doctype == "Sales Order":
                linked = [i["name"] for i in self.store["Sales Invoice"].values()
                          if i["docstatus"] < 2
                          and any(r.get("sales_order") == name for r in i["items"])]
                if linked:
                    raise FrappeError("LinkExistsError", "Cannot delete or cancel because Sales "
                                      f"Order {_link(doctype, name)} is linked with Sales Invoice "
                                      f"{_link('Sales Invoice', linked[0])} ")
            del self.store[doctype][name]
            self._revert_series(doctype, name)
        return self._answer("data", "ok", status=202)

    def _method(self, method: str) -> Response:
        params = {**request.args.to_dict(), **request.form.to_dict()}
        if request.is_json or (request.data and request.data.strip()[:1] == b"{"):
            params.update(_body())
        self._user()
        if method == "frappe.auth.get_logged_user":
            return self._answer("message", g.user)
        if method == VERSIONS:
            return self._answer("message", {
                "frappe": {"title": "Frappe Framework", "description": "Full stack web framework "
                           "with Python, Javascript, MariaDB, Redis, Node", "branch": "",
                           "version": "16.0.0-dev"},
                "erpnext": {"title": "ERPNext", "description": "ERP made simple", "branch": "",
                            "version": "16.0.0-dev"}})
        with self._db:
            if method == "frappe.client.submit":
                doc = _json_arg(params.get("doc"), None)
                if not isinstance(doc, dict) or not doc.get("doctype") or not doc.get("name"):
                    raise FrappeError("ValidationError", "doc with doctype and name required")
                self._user(doc["doctype"], "submit")
                return self._answer("message", self._out(self._submit(doc["doctype"], doc),
                                                         fresh=True))
            if method == "frappe.client.cancel":
                doctype = str(params.get("doctype"))
                return self._answer("message", self._out(self._cancel(doctype,
                                                                      str(params.get("name")))))
            if method == "frappe.client.delete":
                return self._delete(str(params.get("doctype")), str(params.get("name")))
            if method == LINKED:
                return self._answer("message", self._linked(str(params.get("doctype")),
                                                            str(params.get("name"))))
            if method == MAKE_INVOICE:
                self._user("Sales Invoice", "create")
                return self._answer("message", self._make_invoice(str(params.get("source_name"))))
            if method == MAKE_RETURN:
                self._user("Sales Invoice", "create")
                return self._answer("message", self._make_return(str(params.get("source_name"))))
            if method == PAYMENT_ENTRY:
                self._user("Payment Entry", "create")
                amount = params.get("party_amount")
                entry = self._payment_entry(str(params.get("dt")), str(params.get("dn")),
                                            _dec(amount) if amount not in (None, "") else None)
                return self._answer("message", self._local(entry))
            if method == EXCHANGE_RATE:
                return self._answer("message", self._rate(str(params.get("from_currency")),
                                                          str(params.get("to_currency"))))
        module, _, attribute = method.rpartition(".")
        raise FrappeError("ValidationError", f"Failed to get method for command {method} with "
                          f"module '{module}' has no attribute '{attribute}'")

    # --- the document model ---------------------------------------------------------------------
    def _now(self) -> str:
        with self._lock:
            self._clock = max(self._clock + timedelta(microseconds=1), datetime.now())
            return self._clock.strftime("%Y-%m-%d %H:%M:%S.%f")

    def _stored(self, doctype: str, name: str) -> dict[str, Any]:
        doc = self.store[doctype].get(name)
        if doc is None:
            raise FrappeError("DoesNotExistError", f"{doctype} {name} not found", bare=True)
        return doc

    def _get(self, doctype: str, name: str) -> dict[str, Any]:
        self._meta(doctype)
        return json.loads(_dumps(self._stored(doctype, name)), parse_float=Decimal)

    def _out(self, doc: Mapping[str, Any], *, nulls: bool = True, fresh: bool = False) -> dict:
        """A document as Frappe answers it: every field (neutral values for what nobody computes),
        nulls left out of /api/resource answers; a document just saved (`fresh`) still carries
        its float commission sum, as Frappe's in-memory document does [4b, 4g]."""
        doctype = doc["doctype"]
        out = dict(NEUTRAL.get(doctype, {}))
        out.update({k: NEUTRAL_VALUES.get(k, v) for k, v in out.items() if not v})
        out.update(doc)
        for table, child_type in META.get(doctype, {}).get("tables", {}).items():
            rows = []
            for row in doc.get(table) or []:
                full = {**{k: NEUTRAL_VALUES.get(k, v) for k, v in
                           NEUTRAL.get(child_type, {}).items()}, **row}
                if fresh and doctype == "Sales Order" and table in ("items", "taxes") \
                        and row.get("creation") == doc.get("creation"):
                    full["__unsaved"] = 1
                rows.append(full if nulls else {k: v for k, v in full.items() if v is not None})
            out[table] = rows
        if fresh and "amount_eligible_for_commission" in out:
            out["amount_eligible_for_commission"] = _commission(doc)
        if not nulls:
            out = {k: v for k, v in out.items() if v is not None}
        return json.loads(_dumps(out), parse_float=Decimal)

    def _coerce(self, doctype: str, values: Mapping[str, Any], *, child: bool = False) -> dict:
        """Keep known columns only (Frappe's get_valid_dict), with numbers as numbers."""
        known = CHILD_META[doctype] if child else META[doctype]["fields"]
        out: dict[str, Any] = {}
        for key in (*(CHILD_STANDARD if child else STANDARD), *known):
            if key not in values:
                continue
            value = values[key]
            if key in INTS and value is not None:
                value = int(_dec(value))
            elif key in MONEY and value is not None:
                value = _dec(value)
            out[key] = value
        for table, child_type in ({} if child else META[doctype].get("tables", {})).items():
            rows = values.get(table) or []
            if not isinstance(rows, list):
                raise FrappeError("ValidationError", f"{table} must be a list")
            out[table] = [self._coerce(child_type, r, child=True) for r in rows]
        return out

    def _insert(self, doctype: str, body: Mapping[str, Any]) -> dict[str, Any]:
        doc = self._coerce(doctype, body)
        doc.update({"doctype": doctype, "docstatus": int(body.get("docstatus") or 0),
                    "owner": g.get("user", "Administrator"), "idx": 0})
        if doc["docstatus"] != 0:
            raise FrappeError("DocstatusTransitionError",
                              "Cannot change docstatus from 0 (Draft) to 1 (Submitted) on insert")
        self._deadlocked()
        self._defaults(doctype, doc, new=True)
        doc["name"], taken = self._autoname(doctype, doc)  # named before validation [8h, 8i]
        try:
            self._validate(doctype, doc, body)
            self._commit_new(doctype, doc)
        except FrappeError:
            if taken:
                self._revert_series(doctype, doc["name"])
            raise
        self._after_insert(doctype, doc, body)
        return doc

    def _commit_new(self, doctype: str, doc: dict[str, Any]) -> None:
        hold = self._holds.get(doctype)
        if hold is not None:  # a concurrent transaction: it cannot see the others' rows yet
            self._db.release()
            try:
                if hold.wait() == 0:
                    self._holds.pop(doctype, None)
            finally:
                self._db.acquire()
        if doc["name"] in self.store[doctype]:
            raise FrappeError(
                "DuplicateEntryError", title="Duplicate Name",
                messages=[f"{doctype} {_strong(doc['name'])} already exists"],
                exception=(f"('{doctype}', '{doc['name']}', IntegrityError(1062, \"Duplicate entry "
                           f"'{doc['name']}' for key 'PRIMARY'\"))"))
        doc["creation"] = doc["modified"] = self._now()
        doc["modified_by"] = g.get("user", "Administrator")
        self._children(doc)
        self.store[doctype][doc["name"]] = doc

    def _deadlocked(self) -> None:
        with self._lock:
            if self._deadlocks <= 0:
                return
            self._deadlocks -= 1
        raise FrappeError("QueryDeadlockError", status=500, source=ERPNEXT, exception=DEADLOCK)

    def _save(self, doctype: str, doc: dict[str, Any], *, stored: dict[str, Any]) -> dict:
        """doc.save(): docstatus transitions, update-after-submit rules, validation."""
        new = self._coerce(doctype, doc)
        new.update({k: stored[k] for k in ("name", "owner", "creation", "doctype")})
        before, after = stored["docstatus"], int(new.get("docstatus") or 0)
        now = self._now()
        if str(doc.get("modified") or stored["modified"]) != str(stored["modified"]):
            raise FrappeError("TimestampMismatchError", "Error: Document has been modified after "
                              f"you have opened it ({stored['modified']}, {now}). Please refresh "
                              "to get the latest document.", title="Document Modified")
        if before == 2:
            raise FrappeError("ValidationError", exception="Cannot edit cancelled document")
        if before == 1 and after == 0:
            raise FrappeError("DocstatusTransitionError",
                              exception="Cannot change docstatus from 1 (Submitted) to 0 (Draft)")
        if before == 0 and after == 2:
            raise FrappeError("DocstatusTransitionError",
                              exception="Cannot change docstatus from 0 (Draft) to 2 (Cancelled)")
        if before == 1 and after == 1:
            self._unchanged_after_submit(doctype, doc, stored)
            for key in ALLOW_ON_SUBMIT & set(doc) & set(META[doctype]["fields"]):
                stored[key] = new.get(key)
            stored["modified"] = now
            return stored
        if after == 1:
            self._deadlocked()
        self._defaults(doctype, new, new=False)
        self._validate(doctype, new, doc)
        new["modified"] = now
        new["modified_by"] = g.get("user", "Administrator")
        self._children(new)
        self._post = []
        if after == 1 and before == 0:
            self._on_submit(doctype, new)  # may refuse (over-billing) before anything is stored
        self.store[doctype][new["name"]] = new
        answer = json.loads(_dumps(new), parse_float=Decimal)
        answer["amount_eligible_for_commission"] = new.get("amount_eligible_for_commission")
        for hook in self._post:
            hook()
        return answer

    def _unchanged_after_submit(self, doctype: str, sent: Mapping[str, Any],
                                stored: Mapping[str, Any]) -> None:
        """_validate_update_after_submit: what was sent must equal what is stored [4y, 4g]."""
        def differs(a: Any, b: Any) -> bool:
            if isinstance(b, Decimal) or isinstance(a, int | float | Decimal):
                try:
                    return Decimal(repr(a) if isinstance(a, float) else str(a)) != _dec(b)
                except InvalidOperation:
                    return True
            return (a or None) != (b or None)

        for key in META[doctype]["fields"]:
            if key in sent and key not in ALLOW_ON_SUBMIT and differs(sent[key], stored.get(key)):
                raise FrappeError("UpdateAfterSubmitError", f" Not allowed to change "
                                  f"{_strong(LABELS.get(key, key))} after submission from "
                                  f"{_strong(_shown(stored.get(key)))} to "
                                  f"{_strong(_shown(_dec(sent[key]) if key in MONEY else sent[key]))}")
        for table in META[doctype].get("tables", {}):
            if table not in sent:
                continue
            rows = {r.get("name"): r for r in stored.get(table) or []}
            for idx, row in enumerate(sent[table] or [], start=1):
                old = rows.get(row.get("name"), {})
                for key in ("item_code", "qty", "rate", "tax_amount", "account_head"):
                    if key in row and key in old and differs(row[key], old[key]):
                        raise FrappeError("UpdateAfterSubmitError", f"Row #{idx}: Not allowed to "
                                          f"change {_strong(LABELS.get(key, key))} after submission "
                                          f"from {_strong(_shown(old[key]))} to "
                                          f"{_strong(_shown(_dec(row[key])))}")

    def _submit(self, doctype: str, doc: dict[str, Any]) -> dict[str, Any]:
        """frappe.client.submit: the document as sent, saved with docstatus 1."""
        self._meta(doctype)
        if not META[doctype].get("submittable"):
            raise FrappeError("ValidationError", f"Cannot submit {doctype}: not submittable")
        stored = self._stored(doctype, doc["name"])
        return self._save(doctype, {**doc, "docstatus": 1}, stored=stored)

    def _cancel(self, doctype: str, name: str) -> dict[str, Any]:
        self._meta(doctype)
        self._user(doctype, "cancel")
        stored = self._stored(doctype, name)
        if stored["docstatus"] == 2:
            raise FrappeError("ValidationError", exception="Cannot edit cancelled document")
        if stored["docstatus"] == 0:
            raise FrappeError("DocstatusTransitionError",
                              exception="Cannot change docstatus from 0 (Draft) to 2 (Cancelled)")
        if doctype == "Sales Order":
            invoices = [i for i in self.store["Sales Invoice"].values()
                        if any(r.get("sales_order") == name for r in i["items"])]
            if drafts := [i["name"] for i in invoices if i["docstatus"] == 0]:
                links = ", ".join(f'<a href="{self.url}/app/sales-invoice/{d}">{d}</a>'
                                  for d in drafts)
                raise FrappeError("ValidationError", f"Sales Invoice {links} must be deleted "
                                  "before cancelling this Sales Order", source=ERPNEXT)
            if live := [i["name"] for i in invoices if i["docstatus"] == 1]:
                raise FrappeError("LinkExistsError", "Cannot delete or cancel because Sales Order "
                                  f"{_link(doctype, name)} is linked with Sales Invoice "
                                  f"{_link('Sales Invoice', live[0])} ")
            if notes := self.deliveries.get(name):
                raise FrappeError("LinkExistsError", "Cannot delete or cancel because Sales Order "
                                  f"{_link(doctype, name)} is linked with Delivery Note "
                                  f"{_link('Delivery Note', notes[0])} ")
            stored["status"] = "Cancelled"
        if doctype == "Sales Invoice":
            returns = [i["name"] for i in self.store["Sales Invoice"].values()
                       if i.get("return_against") == name and i["docstatus"] == 1]
            if returns:
                raise FrappeError("LinkExistsError", "Cannot delete or cancel because Sales "
                                  f"Invoice {_link(doctype, name)} is linked with Sales Invoice "
                                  f"{_link('Sales Invoice', returns[-1])} ")
            payments = self._payments_of(name)
            if payments:  # Accounts Settings: unlink_payment_on_cancellation_of_invoice [6k]
                for entry in payments:
                    for ref in entry["references"]:
                        if ref["reference_name"] == name:
                            entry["unallocated_amount"] += ref["allocated_amount"]
                            entry["total_allocated_amount"] -= ref["allocated_amount"]
                            ref["allocated_amount"] = Decimal(0)
                g.messages.append({"message": "Payment Entries "
                                   f"{', '.join(p['name'] for p in payments)} are un-linked",
                                   "title": "Message"})
            if stored.get("is_return") and not stored.get("update_outstanding_for_self"):
                self._credit(stored, -1)
            if not stored.get("is_return"):
                self._bill(stored, -1)
            stored["status"] = "Cancelled"
            self._gl_cancel(name)
        if doctype == "Payment Entry":
            for ref in stored["references"]:
                self._apply_payment(ref["reference_name"], -ref["allocated_amount"])
            stored["status"] = "Cancelled"
            self._gl_cancel(name)
        stored["docstatus"] = 2
        for table in META[doctype].get("tables", {}):
            for row in stored.get(table) or []:
                row["docstatus"] = 2
        stored["modified"] = self._now()
        return stored

    def _autoname(self, doctype: str, doc: dict[str, Any]) -> tuple[str, bool]:
        """The name, and whether it took a naming-series number (given back on failure)."""
        if doc.get("amended_from"):  # frappe.model.naming._get_amended_name
            original = doc["amended_from"]
            if self.store[doctype].get(original, {}).get("amended_from"):
                prefix, _, counter = original.rpartition("-")
                return f"{prefix}-{int(counter) + 1}", False
            return f"{original}-1", False
        series = META[doctype].get("series")
        if series:
            prefix = series.replace(".YYYY.", str(self.today().year)).rstrip(".")
            with self._lock:
                self.series[prefix] = self.series.get(prefix, 0) + 1
                return f"{prefix}{self.series[prefix]:05d}", True
        if doctype == "Item":
            return doc["item_code"], False
        if doctype == "Customer":  # set_new_name: " - 1" on a clash, with an alert [2e]
            base = (doc.get("customer_name") or "").strip()
            if base not in self.store["Customer"]:
                return base, False
            taken = [n for n in self.store["Customer"] if n.startswith(f"{base} - ")]
            name = f"{base} - {len(taken) + 1}"
            g.messages.append({"message": f"Changed customer name to '{name}' as '{base}' already "
                               "exists.", "title": "Note", "indicator": "yellow", "alert": 1})
            return name, False
        if doctype == "Contact":
            base = " ".join(p for p in (doc.get("first_name"), doc.get("middle_name"),
                                        doc.get("last_name")) if p) \
                or doc.get("company_name") or "Contact"
            if doc.get("links"):
                base += f"-{doc['links'][0]['link_name'].strip()}"
            return _append_number(base, self.store["Contact"]), False
        if doctype == "Address":
            return _append_number(f"{(doc.get('address_title') or '').strip()}-"
                                  f"{doc.get('address_type')}", self.store["Address"]), False
        return secrets.token_hex(5), False

    def _revert_series(self, doctype: str, name: str) -> None:
        """frappe.model.naming.revert_series_if_last: the last number is given back [4t2, 5z]."""
        series = META[doctype].get("series")
        if not series:
            return
        prefix = series.replace(".YYYY.", str(self.today().year)).rstrip(".")
        number = name[len(prefix):]
        with self._lock:
            if name.startswith(prefix) and number.isdigit() and int(number) == self.series.get(prefix):
                self.series[prefix] -= 1

    def _children(self, doc: dict[str, Any]) -> None:
        for table, child_type in META[doc["doctype"]].get("tables", {}).items():
            for idx, row in enumerate(doc.get(table) or [], start=1):
                row.update({"parent": doc["name"], "parentfield": table,
                            "parenttype": doc["doctype"], "doctype": child_type, "idx": idx,
                            "docstatus": doc["docstatus"]})
                if not row.get("name") or str(row["name"]).startswith("new-"):
                    row["name"] = secrets.token_hex(5)
                row.setdefault("owner", doc["owner"])
                row["creation"] = row.get("creation") or doc["creation"]
                row["modified"], row["modified_by"] = doc["modified"], doc.get("modified_by")

    # --- controllers --------------------------------------------------------------------------
    def _defaults(self, doctype: str, doc: dict[str, Any], *, new: bool) -> None:
        today = self.today().isoformat()
        selling = self.settings["Selling Settings"]
        if doctype == "Customer":
            doc.setdefault("customer_type", "Company")
            doc.setdefault("customer_group", selling["customer_group"])
            doc.setdefault("territory", selling["territory"])
            doc.setdefault("disabled", 0)
            doc.setdefault("naming_series", "CUST-.YYYY.-")
            doc.setdefault("language", "en")
            doc.setdefault("accounts", [])
        elif doctype == "Item":
            doc.setdefault("item_name", doc.get("item_code"))
            doc.setdefault("description", doc.get("item_name"))
            doc.setdefault("item_group", "All Item Groups")
            doc.setdefault("stock_uom", "Nos")
            doc.setdefault("is_stock_item", 1)
            doc.setdefault("is_sales_item", 1)
            doc.setdefault("disabled", 0)
        elif doctype == "Contact":
            doc["full_name"] = " ".join(p for p in (doc.get("first_name"), doc.get("middle_name"),
                                                    doc.get("last_name")) if p)
            primary = next((e for e in doc.get("email_ids") or [] if e.get("is_primary")), None)
            if primary and not doc.get("email_id"):
                doc["email_id"] = primary["email_id"]
            doc.setdefault("mobile_no", "")
            doc.setdefault("is_primary_contact", 0)
            doc["status"] = "Passive"
        elif doctype == "Address":
            doc.setdefault("address_type", "Billing")
            doc.setdefault("is_primary_address", 0)
            doc.setdefault("is_shipping_address", 0)
            doc.setdefault("disabled", 0)
            if not doc.get("address_title") and doc.get("links"):
                doc["address_title"] = doc["links"][0].get("link_name")
        elif doctype == "Payment Entry":
            doc.setdefault("naming_series", META[doctype]["series"])
            doc.setdefault("posting_date", today)
            doc.setdefault("status", "Draft")
            doc.setdefault("mode_of_payment", None)
            doc.setdefault("amended_from", None)
            for key in ("unallocated_amount", "difference_amount", "total_taxes_and_charges"):
                doc.setdefault(key, Decimal(0))
        elif doctype in ("Sales Order", "Sales Invoice"):
            doc.setdefault("company", self.company)
            doc.setdefault("currency", self.currency)
            doc.setdefault("selling_price_list", "Standard Selling")
            doc["price_list_currency"] = self.store["Price List"].get(
                doc["selling_price_list"], {}).get("currency", self.currency)
            doc.setdefault("plc_conversion_rate", Decimal(1))
            doc.setdefault("naming_series", META[doctype]["series"])
            doc.setdefault("apply_discount_on", "Grand Total")
            doc.setdefault("disable_rounded_total", 0)
            doc.setdefault("ignore_pricing_rule", 0)
            doc.setdefault("additional_discount_percentage", Decimal(0))
            doc.setdefault("taxes_and_charges", None)  # no default template over REST [4n, 4t2]
            doc.setdefault("amended_from", None)
            doc.setdefault("language", "en")
            doc.setdefault("taxes", [])
            doc.setdefault("payment_schedule", [])
            if doctype == "Sales Order":
                doc.setdefault("order_type", "Sales")
                doc.setdefault("transaction_date", today)
                doc.setdefault("title", "{customer_name}")
                doc.setdefault("skip_delivery_note", 0)
                doc.setdefault("delivery_status", "Not Delivered")
                doc.setdefault("billing_status", "Not Billed")
                doc.setdefault("per_billed", Decimal(0))
                doc.setdefault("per_delivered", Decimal(0))
            else:
                if not doc.get("set_posting_time"):
                    doc["posting_date"] = today
                doc.setdefault("set_posting_time", 0)
                doc.setdefault("due_date", doc["posting_date"])
                doc.setdefault("debit_to", self._party_account(doc.get("customer")))
                doc.setdefault("is_return", 0)
                doc.setdefault("is_pos", 0)
                doc.setdefault("update_stock", 0)
                doc.setdefault("return_against", None)
                doc.setdefault("po_date", None)
                doc.setdefault("update_outstanding_for_self", 1)
                doc.setdefault("paid_amount", Decimal(0))
            doc["party_account_currency"] = None if doctype == "Sales Order" else \
                self.store["Account"].get(doc.get("debit_to") or "", {}).get("account_currency",
                                                                          self.currency)
            orders = sorted({self.store["Sales Order"].get(r.get("sales_order") or "", {}).get("po_no")
                             for r in doc.get("items") or [] if r.get("sales_order")} - {None, ""})
            if doctype == "Sales Invoice" and orders and not doc.get("po_no"):
                doc["po_no"] = ", ".join(orders)  # set_po_nos [5af]
            customer = self.store["Customer"].get(doc.get("customer") or "")
            if customer:
                doc["customer_name"] = customer["customer_name"]
                doc["customer_group"] = customer.get("customer_group")
                doc["territory"] = customer.get("territory")
                doc.setdefault("customer_address", customer.get("customer_primary_address"))
                doc.setdefault("contact_person", customer.get("customer_primary_contact"))
                contact = self.store["Contact"].get(doc.get("contact_person") or "", {})
                if contact:
                    doc["contact_display"] = contact.get("full_name")
                    doc["contact_mobile"] = contact.get("mobile_no") or ""
                    doc["contact_email"] = contact.get("email_id") or ""
                if "shipping_address_name" not in doc:  # the customer's shipping address [8v]
                    doc["shipping_address_name"] = next(
                        (a["name"] for a in self.store["Address"].values()
                         if a.get("is_shipping_address") and any(
                             link.get("link_name") == customer["name"] for link in a["links"])),
                        None)
                for key, source in (("address_display", "customer_address"),
                                    ("shipping_address", "shipping_address_name")):
                    address = self.store["Address"].get(doc.get(source) or "")
                    if address:
                        doc[key] = _address_display(address)
            warehouse = doc.get("set_warehouse") or self.settings["Stock Settings"]["default_warehouse"]
            for row in doc.get("items") or []:
                item = self.store["Item"].get(row.get("item_code") or "")
                if item:
                    row.setdefault("item_name", item["item_name"])
                    row.setdefault("description", item["description"])
                    row.setdefault("item_group", item.get("item_group"))
                    row["stock_uom"] = item["stock_uom"]
                    row.setdefault("uom", item["stock_uom"])
                    if doctype == "Sales Order":
                        row["is_stock_item"] = item.get("is_stock_item", 0)
                    if "price_list_rate" not in row and item.get("standard_rate"):
                        row["price_list_rate"] = item["standard_rate"]  # the Item Price [5af]
                if warehouse and not row.get("warehouse"):  # item defaults: every row [4aa]
                    row["warehouse"] = warehouse
                row.setdefault("conversion_factor", Decimal(1))
                row.setdefault("grant_commission", 1)
                row.setdefault("margin_type", "")
                row.setdefault("margin_rate_or_amount", Decimal(0))
                row.setdefault("discount_percentage", Decimal(0))
                row["stock_qty"] = _dec(row.get("qty")) * _dec(row["conversion_factor"])
                if doctype == "Sales Invoice":
                    row.setdefault("sales_invoice_item", None)
                    row.setdefault("use_serial_batch_fields", 1)
                    row.setdefault("delivered_qty", Decimal(0))
                    row.setdefault("income_account", f"Sales - {self.abbr}")
                    row.setdefault("expense_account", f"Cost of Goods Sold - {self.abbr}")
                    row.setdefault("cost_center", f"Main - {self.abbr}")
                    row.pop("delivery_date", None)
                    row.pop("transaction_date", None)
                else:
                    row["transaction_date"] = doc["transaction_date"]
                    row.setdefault("billed_amt", Decimal(0))
                    row.setdefault("delivered_qty", Decimal(0))
                    row.setdefault("returned_qty", Decimal(0))
            for row in doc.get("taxes") or []:
                row.setdefault("cost_center", f"Main - {self.abbr}")
                row.setdefault("included_in_print_rate", 0)
                row.setdefault("rate", Decimal(0))
                row["account_currency"] = self.store["Account"].get(
                    row.get("account_head") or "", {}).get("account_currency", self.currency)
                row.setdefault("item_wise_tax_detail", "")

    def _party_account(self, customer: str | None) -> str:
        """erpnext.accounts.party.get_party_account: the customer's, else the company's."""
        row = next((a for a in (self.store["Customer"].get(customer or "") or {}).get("accounts") or []
                    if a.get("company") == self.company and a.get("account")), None)
        return row["account"] if row else f"Debtors - {self.abbr}"

    def _links(self, doctype: str, doc: Mapping[str, Any]) -> None:
        for (owner, key), target in LINKS.items():
            if owner == doctype and doc.get(key):
                self._link(target, doc[key], key.replace("_", " ").title())
        for table, child_type in META[doctype].get("tables", {}).items():
            for idx, row in enumerate(doc.get(table) or [], start=1):
                for (owner, key), target in LINKS.items():
                    if owner == child_type and row.get(key):
                        self._link(target, row[key], f"Row #{idx}: {key.replace('_', ' ').title()}")
                if child_type == "Dynamic Link":
                    self._link(row.get("link_doctype") or "", row.get("link_name") or "",
                               f"Row #{idx}: Link Name")

    def _validate(self, doctype: str, doc: dict[str, Any], body: Mapping[str, Any]) -> None:
        self._links(doctype, doc)
        self._mandatory(doctype, doc)
        for table, child_type in META[doctype].get("tables", {}).items():
            for idx, row in enumerate(doc.get(table) or [], start=1):
                self._mandatory(child_type, row, idx=idx, parent=doc)
        if doctype == "Customer" and "address_line1" in body:
            missing = [label for key, label in (("city", "City"), ("country", "Country"))
                       if not body.get(key)]
            if missing:
                raise FrappeError("ValidationError", "Following fields are mandatory to create "
                                  "address: <br><br> <ul>" + "".join(f"<li>{m}</li>" for m in missing)
                                  + "</ul>", title="Missing Values Required", source=ERPNEXT)
            self._link("Country", body["country"], "Country")
        if doctype in ("Sales Order", "Sales Invoice"):
            self._validate_selling(doctype, doc)
        if doctype == "Payment Entry":
            self._validate_payment(doc)

    def _mandatory(self, doctype: str, doc: Mapping[str, Any], idx: int | None = None,
                   parent: Mapping[str, Any] | None = None) -> None:
        missing = [(k, label) for k, label in MANDATORY.get(doctype, [])
                   if doc.get(k) in (None, "", [])]
        if not missing:
            return
        if idx is None:
            texts = [f"Error: Value missing for {doctype}: {label}" for _, label in missing]
            owner = f"[{doctype}, {doc.get('name')}]"
        else:
            texts = [f"Error: Value missing for {doctype}: {label}" for _, label in missing]
            owner = f"[{doctype}, {(parent or {}).get('name')}]"
        raise FrappeError("MandatoryError", exception=f"{owner}: "
                          f"{', '.join(k for k, _ in missing)}", messages=texts,
                          title="Missing Fields")

    def _link(self, doctype: str, name: str, label: str) -> None:
        target = self.store.get(doctype, {}).get(name)
        if target is None:
            raise FrappeError("LinkValidationError", f"Could not find {label}: {name}")
        if META.get(doctype, {}).get("submittable") and target["docstatus"] == 2:
            raise FrappeError("CancelledLinkError", f"Cannot link cancelled document: {name}")

    def _validate_selling(self, doctype: str, doc: dict[str, Any]) -> None:
        customer = self.store["Customer"][doc["customer"]]
        if customer.get("disabled"):
            raise FrappeError("ValidationError", f"Customer {doc['customer']} is disabled")
        for idx, row in enumerate(doc["items"], start=1):
            item = self.store["Item"][row["item_code"]]
            if item.get("disabled"):
                raise FrappeError("ValidationError", f"Item {row['item_code']} is disabled")
            if _dec(row["qty"]) <= 0 and not doc.get("is_return"):
                raise FrappeError("ValidationError", f"Row #{idx}: Quantity must be greater than 0")
            if doctype == "Sales Invoice" and row.get("sales_order") and not doc.get("is_return"):
                so = self.store["Sales Order"][row["sales_order"]]
                if so["docstatus"] != 1:
                    raise FrappeError("ValidationError",
                                      f"Sales Order {row['sales_order']} is not submitted")
        # transaction_base.validate_uom_is_integer: stock UOM first, then the row's UOM [3d, 3e]
        for uom_key, qty_key in (("stock_uom", "stock_qty"), ("uom", "qty")):
            for idx, row in enumerate(doc["items"], start=1):
                uom = self.store["UOM"].get(row.get(uom_key) or "")
                qty = _dec(row.get(qty_key))
                if uom and uom.get("must_be_whole_number") and qty != qty.to_integral_value():
                    raise FrappeError(
                        "UOMMustBeIntegerError", module="erpnext.utilities.transaction_base",
                        source=ERPNEXT, message=f"Row {idx}: Quantity ({_shown(qty)}) cannot be a "
                        f"fraction. To allow this, disable '{_strong('Must be Whole Number')}' in "
                        f"UOM {_strong(uom['name'])}.", title="UOM Conversion Error")
        for idx, tax in enumerate(doc.get("taxes") or [], start=1):
            if tax["charge_type"] not in CHARGE_TYPES:
                raise FrappeError("ValidationError", f"Row {idx}: invalid Type {tax['charge_type']}")
            if tax["charge_type"] in ("Actual", "On Net Total") and tax.get("row_id"):
                raise FrappeError("ValidationError", "Can refer row only if the charge type is "
                                  "'On Previous Row Amount' or 'Previous Row Total'")
            if tax["charge_type"] == "Actual" and tax.get("included_in_print_rate"):
                raise FrappeError("ValidationError", f"Charge of type 'Actual' in row {idx} cannot "
                                  "be included in Item Rate or Paid Amount")
            if tax["charge_type"] not in ("Actual", "On Net Total"):
                raise FrappeError("ValidationError", f"the fake supports Actual and On Net Total "
                                  f"rows only (row {idx})")
        if doctype == "Sales Order" and doc.get("order_type") == "Sales" \
                and not doc.get("skip_delivery_note"):
            dates = [r["delivery_date"] for r in doc["items"] if r.get("delivery_date")]
            if dates:
                doc["delivery_date"] = max(dates)
            if not doc.get("delivery_date"):
                raise FrappeError("ValidationError", "Please enter Delivery Date", source=ERPNEXT)
            for idx, row in enumerate(doc["items"], start=1):
                row.setdefault("delivery_date", doc["delivery_date"])
                if doc.get("po_date") and doc["po_date"] > row["delivery_date"]:
                    raise FrappeError("ValidationError", f"Row #{idx}: Expected Delivery Date "
                                      "cannot be before Purchase Order Date", source=ERPNEXT)
            if doc.get("po_no"):  # validate_po [4i, 4j]
                dup = [o["name"] for o in self.store["Sales Order"].values()
                       if o.get("po_no") == doc["po_no"] and o["docstatus"] < 2
                       and o["customer"] == doc["customer"] and o["name"] != doc.get("name")]
                if dup and self.settings["Selling Settings"]["allow_against_multiple_purchase_orders"]:
                    g.messages.append({"message": f"Warning: Sales Order {_strong(dup[0])} already "
                                       f"exists against Customer's Purchase Order "
                                       f"{_strong(doc['po_no'])}", "alert": 1})
                elif dup:
                    raise FrappeError(
                        "ValidationError", source=ERPNEXT, message=(
                            f"Sales Order {_strong(dup[0])} already exists against Customer's "
                            f"Purchase Order {_strong(doc['po_no'])}. To allow multiple Sales "
                            f"Orders, Enable {_strong(ALLOW_MULTIPLE)}"
                            f" in <a href=\"{self.url}/app/selling-settings/Selling%20Settings\">"
                            "Selling Settings</a>"))
        self._calculate(doctype, doc)
        if doctype == "Sales Invoice" and not doc.get("is_return"):
            self._party_currency(doc)
        if doctype == "Sales Invoice" and doc.get("is_return") and doc.get("update_outstanding_for_self"):
            link = f'<a href="{self.url}/app/sales-invoice/{doc["return_against"]}">' \
                   f'{doc["return_against"]}</a>'
            g.messages.append({"message": f"We can see {_strong('Credit Note')} is made against "
                               f"{link}. If you want {link}'s outstanding to be updated, uncheck '"
                               f"{_strong('Update Outstanding for Self')}' checkbox. <br><br> Or "
                               f"you can use <a href=\"{self.url}/app/payment-reconciliation\">"
                               f"Payment Reconciliation</a> tool to reconcile against {link} later.",
                               "title": "Message"})
        if doc.get("docstatus", 0) == 0:
            doc["status"] = "Draft"

    def _party_currency(self, doc: Mapping[str, Any]) -> None:
        """accounts_controller.validate_party_account_currency [7c, 7j]."""
        has_ledger = any(e["party"] == doc["customer"] and not e["is_cancelled"]
                         for e in self.store["GL Entry"].values())
        currency = doc["party_account_currency"]
        allowed = self.settings["Accounts Settings"][
            "allow_multi_currency_invoices_against_single_party_account"]
        if not has_ledger and currency != doc["currency"] and not allowed:
            raise FrappeError("ValidationError", f"Party Account {_strong(doc['debit_to'])} currency "
                              f"({currency}) and document currency ({doc['currency']}) should be "
                              "same", source=ERPNEXT)

    def _validate_payment(self, doc: dict[str, Any]) -> None:
        paid_to = self.store["Account"].get(doc.get("paid_to") or "", {})
        if paid_to.get("account_type") == "Bank" and not (doc.get("reference_no")
                                                          and doc.get("reference_date")):
            raise FrappeError("ValidationError", "Reference No and Reference Date is mandatory "
                              "for Bank transaction", source=ERPNEXT)
        for ref in doc.get("references") or []:
            invoice = self.store["Sales Invoice"].get(ref.get("reference_name") or "")
            if invoice:
                ref["total_amount"] = invoice["base_grand_total"]
                ref["outstanding_amount"] = invoice["outstanding_amount"]
        doc["total_allocated_amount"] = sum((_dec(r.get("allocated_amount"))
                                             for r in doc.get("references") or []), Decimal(0))
        doc["base_total_allocated_amount"] = doc["total_allocated_amount"]
        doc["unallocated_amount"] = _dec(doc.get("paid_amount")) - doc["total_allocated_amount"]
        doc["status"] = "Draft"
    def _precision(self, currency: str) -> int:
        """Currency fields' precision from the currency's number format (get_number_format_info)."""
        number_format = self.store["Currency"].get(currency, {}).get("number_format", "#,###.##")
        return NUMBER_FORMATS.get(number_format, 2)

    def _calculate(self, doctype: str, doc: dict[str, Any]) -> None:
        """erpnext.controllers.taxes_and_totals.calculate_taxes_and_totals, Decimal-exact."""
        p = self._precision(doc["currency"])
        rate = Decimal(1)
        if doc["currency"] != self.currency:
            rate = _dec(doc.get("conversion_rate")) or self.exchange_rates.get(doc["currency"], 0)
            if not rate:
                raise FrappeError("ValidationError", f"Unable to find exchange rate for "
                                  f"{doc['currency']} to {self.currency}")
        doc["conversion_rate"] = rate
        items, taxes = doc["items"], doc.get("taxes") or []
        for item in items:
            for key in ("price_list_rate", "rate", "discount_amount"):
                item[key] = _round(_dec(item.get(key)), p)
            item["qty"] = _dec(item["qty"])
            pct = _dec(item.get("discount_percentage"))
            if pct == 100:
                item["rate"] = Decimal(0)
            elif item["price_list_rate"] and not item["rate"]:
                item["rate"] = _round(item["price_list_rate"] * (1 - pct / 100), p)
            if item["price_list_rate"] > 0:
                item["discount_amount"] = item["price_list_rate"] - item["rate"]
            item["amount"] = _round(item["rate"] * item["qty"], p)
            item["net_rate"], item["net_amount"] = item["rate"], item["amount"]
        discount = _round(_dec(doc.get("discount_amount")), p)
        doc["discount_amount"] = discount
        if discount and not doc.get("apply_discount_on"):
            raise FrappeError("ValidationError", "Please select Apply Discount On")
        grand = self._totals(doc, p)
        if discount:
            if doc["apply_discount_on"] == "Net Total":
                base = doc["net_total"]
            else:
                base = grand - sum((_round(_dec(t["tax_amount"]), p) for t in taxes
                                    if t["charge_type"] == "Actual"), Decimal(0))
            net_total, before = Decimal(0), doc["net_total"]
            for i, item in enumerate(items):
                share = discount * item["net_amount"] / base if base else Decimal(0)
                item["net_amount"] = _round(item["net_amount"] - share, p)
                net_total += item["net_amount"]
                if i == len(items) - 1 and (doc["apply_discount_on"] == "Net Total" or not taxes
                                            or base == before):
                    item["net_amount"] = _round(item["net_amount"]
                                                + _round(before - net_total - discount, p), p)
                item["net_rate"] = _round(item["net_amount"] / item["qty"], p) if item["qty"] else 0
            grand_before = grand
            grand = self._totals(doc, p)
            if doc["apply_discount_on"] == "Grand Total" and taxes:
                doc["rounding_adjustment"] = _round(grand_before - discount - grand, p)
                grand += doc["rounding_adjustment"]
        doc["grand_total"] = grand
        doc["total_taxes_and_charges"] = _round(grand - doc["net_total"]
                                                - _dec(doc.get("rounding_adjustment")), p)
        bp = self._precision(self.currency)
        for key in ("total", "net_total", "grand_total", "total_taxes_and_charges",
                    "discount_amount", "rounding_adjustment"):
            doc[f"base_{key}"] = _round(_dec(doc.get(key)) * rate, bp)
        for item in items:
            for key in ("rate", "amount", "net_rate", "net_amount", "price_list_rate"):
                item[f"base_{key}"] = _round(item[key] * rate, bp)
            if doctype == "Sales Order":
                item["stock_uom_rate"] = item["rate"]
        for t in taxes:
            t["base_tax_amount_after_discount_amount"] = _round(
                t["tax_amount_after_discount_amount"] * rate, bp)
            t["base_tax_amount"] = _round(t["tax_amount"] * rate, bp)
            t["base_total"] = _round(t["total"] * rate, bp)
        doc["amount_eligible_for_commission"] = _round(Decimal(repr(_commission(doc))), 9)
        if doc.get("disable_rounded_total"):
            doc["rounded_total"] = doc["base_rounded_total"] = Decimal(0)
        else:
            fraction = _dec(self.store["Currency"].get(doc["currency"], {})
                            .get("smallest_currency_fraction_value")) or Decimal(1)
            rounded = (grand / fraction).quantize(Decimal(1), ROUND_HALF_EVEN) * fraction
            doc["rounded_total"] = _round(rounded, p)
            doc["rounding_adjustment"] = _round(_dec(doc.get("rounding_adjustment"))
                                                + rounded - grand, p)
            doc["base_rounded_total"] = _round(doc["rounded_total"] * rate, bp)
        doc["base_rounding_adjustment"] = _round(_dec(doc.get("rounding_adjustment")) * rate, bp)
        shown = doc["rounded_total"] or doc["grand_total"]
        doc["in_words"] = _in_words(shown, doc["currency"], p)
        doc["base_in_words"] = _in_words(doc["base_rounded_total"] or doc["base_grand_total"],
                                         self.currency, bp)
        for item in items if doctype == "Sales Order" else ():
            item["gross_profit"] = item["base_amount"]  # no valuation rate without stock history
        if doctype == "Sales Invoice":
            # outstanding in the party account's currency: the company's [7j]
            same = doc.get("party_account_currency", doc["currency"]) == doc["currency"]
            due = (doc["rounded_total"] or doc["grand_total"]) if same else \
                (doc["base_rounded_total"] or doc["base_grand_total"])
            if doc.get("is_return"):  # the ledger sets the credit note's own after submit [5aa, 5ac]
                due = Decimal(0)
            doc["outstanding_amount"] = due
            doc["paid_amount"] = Decimal(0)
        if doctype == "Sales Order":
            doc["payment_schedule"] = [{
                "name": (doc.get("payment_schedule") or [{}])[0].get("name"),
                "due_date": doc.get("transaction_date"), "invoice_portion": Decimal(100),
                "payment_amount": doc["grand_total"], "outstanding": doc["grand_total"],
                "paid_amount": Decimal(0), "base_payment_amount": doc["base_grand_total"]}]

    def _totals(self, doc: dict[str, Any], p: int) -> Decimal:
        """calculate_net_total + calculate_taxes + calculate_totals; the grand total."""
        items, taxes = doc["items"], doc.get("taxes") or []
        doc["total_qty"] = sum((i["qty"] for i in items), Decimal(0))
        doc["total"] = _round(sum((i["amount"] for i in items), Decimal(0)), p)
        doc["net_total"] = _round(sum((i["net_amount"] for i in items), Decimal(0)), p)
        doc["rounding_adjustment"] = Decimal(0)
        actual = {n: _round(_dec(t.get("tax_amount")), p) for n, t in enumerate(taxes)
                  if t["charge_type"] == "Actual"}
        for t in taxes:
            t["tax_amount_after_discount_amount"] = Decimal(0)
            if t["charge_type"] != "Actual":
                t["tax_amount"] = Decimal(0)
        for n, item in enumerate(items):
            for i, t in enumerate(taxes):
                if t["charge_type"] == "Actual":
                    share = (item["net_amount"] * _round(_dec(t["tax_amount"]), p) / doc["net_total"]
                             if doc["net_total"] else Decimal(0))
                    actual[i] -= share
                    if n == len(items) - 1:
                        share += actual[i]
                else:
                    share = _dec(t.get("rate")) / 100 * item["net_amount"]
                    t["tax_amount"] += share
                t["tax_amount_after_discount_amount"] += share
        running = doc["net_total"]
        for t in taxes:
            t["tax_amount"] = _round(_dec(t["tax_amount"]), p)
            t["tax_amount_after_discount_amount"] = _round(t["tax_amount_after_discount_amount"], p)
            running = _round(running + t["tax_amount_after_discount_amount"], p)
            t["total"] = running
        return taxes[-1]["total"] if taxes else doc["net_total"]


    def _after_insert(self, doctype: str, doc: dict[str, Any], body: Mapping[str, Any]) -> None:
        if doctype != "Customer":  # customer.py on_update: create_primary_contact/address [2d]
            return
        if doc.get("email_id") or doc.get("mobile_no"):
            contact: dict[str, Any] = {"is_primary_contact": 1,
                                       "links": [{"link_doctype": "Customer",
                                                  "link_name": doc["name"]}]}
            if doc.get("customer_type") == "Individual":
                parts = doc["customer_name"].split()
                contact.update(first_name=parts[0], middle_name=" ".join(parts[1:-1]) or None,
                               last_name=parts[-1] if len(parts) > 1 else None)
            else:
                contact.update(first_name=doc["customer_name"], company_name=doc["customer_name"])
            if doc.get("email_id"):
                contact["email_ids"] = [{"email_id": doc["email_id"], "is_primary": 1}]
            if doc.get("mobile_no"):
                contact["mobile_no"] = doc["mobile_no"]
                contact["phone_nos"] = [{"phone": doc["mobile_no"], "is_primary_mobile_no": 1}]
            doc["customer_primary_contact"] = self._insert("Contact", contact)["name"]
        if body.get("address_line1"):
            address = {"address_title": doc["customer_name"], "address_type": "Billing",
                       "is_primary_address": 1, "is_shipping_address": 1,
                       "links": [{"link_doctype": "Customer", "link_name": doc["name"]}]}
            address.update({k: body.get(k) for k in ("address_line1", "address_line2", "city",
                                                     "state", "pincode", "country")
                            if body.get(k)})
            saved = self._insert("Address", address)
            doc["customer_primary_address"] = saved["name"]
            doc["primary_address"] = _address_display(saved)
        doc["modified"] = self._now()  # db_set of the primary contact/address

    def _on_submit(self, doctype: str, doc: dict[str, Any]) -> None:
        if doctype == "Sales Order":
            doc.update(status="To Deliver and Bill", billing_status="Not Billed",
                       delivery_status="Not Delivered", per_billed=Decimal(0))
        elif doctype == "Sales Invoice":
            if doc.get("is_return"):
                doc["status"] = "Return"
                if not doc.get("update_outstanding_for_self"):
                    self._credit(doc, +1)
                else:
                    self._post.append(lambda: doc.update(outstanding_amount=doc["grand_total"]))
            else:
                self._bill(doc, +1)
                doc["status"] = "Unpaid"
            self._gl(doc, doc["debit_to"], doc["party_account_currency"])
        elif doctype == "Payment Entry":
            for ref in doc["references"]:
                self._apply_payment(ref["reference_name"], ref["allocated_amount"])
                invoice = self.store["Sales Invoice"].get(ref["reference_name"]) or {}
                ref["outstanding_amount"] = invoice.get("outstanding_amount", Decimal(0))
            doc["status"] = "Submitted"
            self._gl(doc, doc["paid_from"], doc.get("paid_from_account_currency") or self.currency)
        for table in META[doctype].get("tables", {}):
            for row in doc.get(table) or []:
                row["docstatus"] = 1

    def _gl(self, doc: Mapping[str, Any], account: str, currency: str) -> None:
        """The receivable GL Entry a submitted invoice or payment makes (party ledger)."""
        party = doc.get("customer") or doc.get("party")
        self.store["GL Entry"][secrets.token_hex(5)] = {
            "name": secrets.token_hex(5), "doctype": "GL Entry", "docstatus": 1,
            "posting_date": doc.get("posting_date"), "account": account, "party_type": "Customer",
            "party": party, "company": self.company, "account_currency": currency,
            "voucher_type": doc["doctype"], "voucher_no": doc["name"], "is_cancelled": 0,
            "creation": self._now(), "modified": self._now()}

    def _gl_cancel(self, voucher: str) -> None:
        for entry in self.store["GL Entry"].values():
            if entry["voucher_no"] == voucher:
                entry["is_cancelled"] = 1

    def _status(self, invoice: dict[str, Any]) -> None:
        """Sales Invoice set_status for a submitted invoice [5ah, 5al, 6f, 6r]."""
        outstanding, total = invoice["outstanding_amount"], invoice["base_grand_total"]
        credited = any(i.get("return_against") == invoice["name"] and i["docstatus"] == 1
                       for i in self.store["Sales Invoice"].values())
        if outstanding < 0 and credited:
            invoice["status"] = "Credit Note Issued"
        elif outstanding <= 0:
            invoice["status"] = "Paid"
        elif outstanding < (invoice["rounded_total"] or invoice["grand_total"]
                            if invoice["party_account_currency"] == invoice["currency"] else total):
            invoice["status"] = "Partly Paid"
        else:
            invoice["status"] = "Unpaid"

    def _credit(self, credit_note: Mapping[str, Any], sign: int) -> None:
        original = self.store["Sales Invoice"].get(credit_note.get("return_against") or "")
        if original is not None:
            original["outstanding_amount"] += sign * credit_note["grand_total"]
            self._status(original)

    def _apply_payment(self, invoice: str, amount: Decimal) -> None:
        doc = self.store["Sales Invoice"].get(invoice)
        if doc is not None and doc["docstatus"] == 1:
            doc["outstanding_amount"] -= amount
            self._status(doc)

    def _payments_of(self, invoice: str) -> list[dict[str, Any]]:
        return [p for p in self.store["Payment Entry"].values() if p["docstatus"] == 1
                and any(r["reference_name"] == invoice and r["allocated_amount"]
                        for r in p["references"])]

    def _bill(self, invoice: dict[str, Any], sign: int) -> None:
        """status_updater: billed_amt / per_billed of the Sales Orders an invoice bills.

        Checked in full before anything changes, so a refused submission leaves no trace.
        """
        updates = []
        for row in invoice["items"]:
            so = self.store["Sales Order"].get(row.get("sales_order") or "")
            line = next((r for r in (so or {}).get("items", []) if r["name"] == row.get("so_detail")),
                        None)
            if line is None:
                continue
            billed = _dec(line.get("billed_amt")) + sign * _dec(row["amount"])
            if sign > 0 and billed > line["amount"] + Decimal("0.01"):
                raise FrappeError("ValidationError", f"Cannot overbill for Item {row['item_code']} "
                                  f"in row {row['idx']} more than {line['amount']}. To allow "
                                  "over-billing, please set allowance in Accounts Settings",
                                  title="Limit Crossed", source=ERPNEXT)
            updates.append((line, billed))
        for line, billed in updates:
            line["billed_amt"] = billed
        for so in {r.get("sales_order") for r in invoice["items"] if r.get("sales_order")}:
            order = self.store["Sales Order"][so]
            total = sum((r["amount"] for r in order["items"]), Decimal(0))
            billed = sum((_dec(r.get("billed_amt")) for r in order["items"]), Decimal(0))
            order["per_billed"] = _round(billed / total * 100, 2) if total else Decimal(0)
            if order["docstatus"] == 1:
                order["billing_status"] = "Fully Billed" if order["per_billed"] >= 100 else \
                    ("Partly Billed" if billed else "Not Billed")
                order["status"] = "To Deliver" if order["per_billed"] >= 100 else \
                    "To Deliver and Bill"
            order["modified"] = self._now()

    def _linked(self, doctype: str, name: str) -> dict[str, Any]:
        """get_submitted_linked_docs: what a cancellation would have to take along [4w, 5r, 6h];
        an invoice's Payment Entries are not listed [6i]."""
        self._get(doctype, name)
        docs: list[dict[str, Any]] = []
        if doctype == "Sales Order":
            docs += [{"doctype": "Sales Invoice", "name": i["name"], "docstatus": 1}
                     for i in self.store["Sales Invoice"].values() if i["docstatus"] == 1
                     and any(r.get("sales_order") == name for r in i["items"])]
            docs += [{"doctype": "Delivery Note", "name": n, "docstatus": 1}
                     for n in self.deliveries.get(name, [])]
        return {"docs": docs, "count": len(docs)}

    def _local(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A mapped, unsaved document as answered: no names, ``__islocal`` [5d, 6b]."""
        doctype = doc["doctype"]
        out = self._out({**doc, "__islocal": 1, "__unsaved": 1}, fresh=True)
        for key in ("name", "creation", "modified", "modified_by", "title"):
            out.pop(key, None)
        out["owner"], out["idx"], out["docstatus"] = "Administrator", 0, 0
        if doctype != "Payment Entry":
            out["__onload"] = {"load_after_mapping": True}
        for table, child_type in META[doctype].get("tables", {}).items():
            for idx, row in enumerate(out.get(table) or [], start=1):
                for key in ("name", "creation", "parent", "title", "owner"):
                    row.pop(key, None)
                row.update(docstatus=0, idx=idx, parentfield=table, parenttype=doctype,
                           doctype=child_type, __islocal=1)
                if doctype == "Payment Entry":  # as get_payment_entry answers them [6b]
                    row.update(modified=self._now(), modified_by=g.get("user", "Administrator"))
                else:
                    row.pop("modified", None)
                    row.pop("modified_by", None)
                    row.update(owner="Administrator", __unsaved=1)
                    row = {k: v for k, v in {"owner": row.pop("owner"), **row}.items()
                           if v is not None}
                out[table][idx - 1] = row
        head = {k: out.pop(k) for k in ("owner", "docstatus", "idx") if k in out}
        return {k: v for k, v in {**head, **out}.items() if v is not None}

    def _make_invoice(self, source_name: str) -> dict[str, Any]:
        """make_sales_invoice: the unsaved invoice for what is not billed yet [5d, 5o, 8o]."""
        so = self.store["Sales Order"].get(source_name)
        if so is None:
            raise FrappeError("DoesNotExistError", f"Sales Order {source_name} not found", bare=True)
        if so["docstatus"] != 1:
            raise FrappeError("ValidationError", "Cannot map because following condition fails: "
                              "docstatus=1", source=ERPNEXT)
        copy = {k: so.get(k) for k in META["Sales Invoice"]["fields"] if k in so}
        for key in ("naming_series", "status", "amended_from", "name", "taxes_and_charges"):
            copy.pop(key, None)
        items = []
        for row in so["items"]:
            billed = _dec(row.get("billed_amt"))
            if not row["qty"] or abs(billed) >= abs(row["amount"]):
                continue
            mapped = {k: row.get(k) for k in CHILD_META["Sales Invoice Item"] if k in row}
            mapped.pop("is_stock_item", None)
            mapped.update(sales_order=so["name"], so_detail=row["name"], stock_uom_rate=Decimal(0),
                          amount=row["amount"] - billed,
                          qty=(row["amount"] - billed) / row["rate"] if billed and row["rate"]
                          else row["qty"])
            items.append(mapped)
        taxes = [{k: t.get(k) for k in CHILD_META["Sales Taxes and Charges"] if k in t}
                 for t in so.get("taxes") or []]
        doc = {**copy, "doctype": "Sales Invoice", "items": items, "taxes": taxes,
               "is_return": 0, "update_outstanding_for_self": 1,
               "update_billed_amount_in_delivery_note": 1,
               "outstanding_amount": Decimal(0)}
        with self.app.test_request_context():
            g.messages = []
            self._defaults("Sales Invoice", doc, new=True)
            if items:
                self._calculate("Sales Invoice", doc)
        doc["status"] = "Draft"
        return self._local(doc)

    def _make_return(self, source_name: str) -> dict[str, Any]:
        """make_sales_return: a credit note for what was not returned yet, taxes copied [5y, 5ai]."""
        invoice = self._stored("Sales Invoice", source_name)
        if invoice["docstatus"] != 1:
            raise FrappeError("ValidationError", "Cannot map because following condition fails: "
                              "docstatus=1", source=ERPNEXT)
        returned: dict[str, Decimal] = {}
        for other in self.store["Sales Invoice"].values():
            if other.get("return_against") == source_name and other["docstatus"] == 1:
                for row in other["items"]:
                    key = row.get("sales_invoice_item") or ""
                    returned[key] = returned.get(key, Decimal(0)) + row["qty"]
        items = []
        for row in invoice["items"]:
            qty = -(row["qty"] + returned.get(row["name"], Decimal(0)))
            if not qty:
                continue
            mapped = {k: row.get(k) for k in CHILD_META["Sales Invoice Item"] if k in row}
            mapped.pop("is_stock_item", None)
            mapped.update(qty=qty, sales_invoice_item=row["name"])
            items.append(mapped)
        taxes = [{**{k: t.get(k) for k in CHILD_META["Sales Taxes and Charges"] if k in t},
                  "tax_amount": -t["tax_amount"]} for t in invoice.get("taxes") or []]
        copy = {k: invoice.get(k) for k in META["Sales Invoice"]["fields"] if k in invoice}
        for key in ("naming_series", "status", "amended_from", "name", "po_no",
                    "taxes_and_charges"):
            copy.pop(key, None)
        doc = {**copy, "doctype": "Sales Invoice", "items": items, "taxes": taxes, "is_return": 1,
               "return_against": source_name, "update_outstanding_for_self": 1,
               "discount_amount": -_dec(invoice.get("discount_amount"))}
        with self.app.test_request_context():
            g.messages = []
            self._calculate("Sales Invoice", doc)
        doc["status"] = "Draft"
        return self._local(doc)

    def _payment_entry(self, dt: str, dn: str, amount: Decimal | None) -> dict[str, Any]:
        """get_payment_entry: an unsaved Receive entry into the bank account [6b, 6o]."""
        invoice = self._stored(dt, dn)
        paid = amount if amount is not None else invoice["outstanding_amount"]
        bank = next((a["name"] for a in self.store["Account"].values()
                     if a.get("account_type") == "Bank"), f"Cash - {self.abbr}")
        customer = self.store["Customer"].get(invoice["customer"], {})
        contact = self.store["Contact"].get(invoice.get("contact_person") or "", {})
        return {"doctype": "Payment Entry", "naming_series": META["Payment Entry"]["series"],
                "payment_type": "Receive", "posting_date": self.today().isoformat(),
                "company": self.company, "party_type": "Customer", "party": invoice["customer"],
                "party_name": customer.get("customer_name"),
                "contact_person": invoice.get("contact_person"),
                "contact_email": contact.get("email_id"), "paid_from": invoice["debit_to"],
                "paid_from_account_currency": invoice["party_account_currency"], "paid_to": bank,
                "paid_to_account_currency": self.currency, "paid_amount": paid,
                "received_amount": paid, "base_paid_amount": paid, "base_received_amount": paid,
                "source_exchange_rate": Decimal(1), "target_exchange_rate": Decimal(1),
                "total_allocated_amount": paid, "base_total_allocated_amount": paid,
                "unallocated_amount": Decimal(0), "difference_amount": Decimal(0),
                "total_taxes_and_charges": Decimal(0), "base_total_taxes_and_charges": Decimal(0),
                "reference_date": self.today().isoformat(), "status": "Draft",
                "references": [{"doctype": "Payment Entry Reference", "reference_doctype": dt,
                                "reference_name": dn, "due_date": invoice.get("due_date"),
                                "total_amount": paid, "outstanding_amount": paid,
                                "allocated_amount": paid, "exchange_rate": Decimal(1),
                                "account": invoice["debit_to"]}]}

    def _rate(self, from_currency: str, to_currency: str) -> Decimal:
        rows = [r for r in self.store["Currency Exchange"].values()
                if r["from_currency"] == from_currency and r["to_currency"] == to_currency]
        return max(rows, key=lambda r: r["date"])["exchange_rate"] if rows else Decimal(0)

    def _matches(self, doctype: str, doc: Mapping[str, Any], filters: Any, or_filters: Any) -> int:
        """How many rows Frappe's query returns for the document: 0, 1, or one per child match."""
        conditions = _conditions(doctype, filters)
        parent = [c for c in conditions if c[0] == doctype]
        if not all(_test(doctype, self._column(doc, f), op, v) for _, f, op, v in parent):
            return 0
        ors = _conditions(doctype, or_filters)
        if ors and not any(_test(doctype, doc.get(f), op, v) for dt, f, op, v in ors
                           if dt == doctype):
            return 0
        children = [c for c in conditions if c[0] != doctype]
        if not children:
            return 1
        count = 0
        for child_type in {c[0] for c in children}:
            tables = [t for t, ct in META[doctype].get("tables", {}).items() if ct == child_type]
            if not tables:
                raise FrappeError("DataError", f"{child_type} is not a child table of {doctype}")
            rows = [r for t in tables for r in doc.get(t) or []]
            wanted = [c for c in children if c[0] == child_type]
            hits = sum(1 for r in rows if all(_test(child_type, r.get(f), op, v)
                                              for _, f, op, v in wanted))
            if not hits:
                return 0
            count = max(count, hits)
        return count


# --- helpers ------------------------------------------------------------------------------------
def _commission(doc: Mapping[str, Any]) -> float:
    """calculate_commission: a float sum, as ERPNext adds them (127.86999999999999) [4b]."""
    total = 0.0
    for item in doc.get("items") or []:
        if item.get("grant_commission", 1):
            total += float(_dec(item.get("base_net_amount", item.get("net_amount"))))
    return total


_ONES = ["Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten",
         "Eleven", "Twelve", "Thirteen", "Fourteen", "Fifteen", "Sixteen", "Seventeen", "Eighteen",
         "Nineteen"]
_TENS = ["_", "_", "Twenty", "Thirty", "Forty", "Fifty", "Sixty", "Seventy", "Eighty", "Ninety"]


def _number_words(n: int) -> str:
    """num2words(n, lang="en") as frappe.utils.in_words title-cases it ("One Hundred And ...")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + (f" {_ONES[n % 10]}" if n % 10 else "")
    for size, word in ((10**9, "Billion"), (10**6, "Million"), (1000, "Thousand"), (100, "Hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            joint = " And " if size == 100 and rest else (", " if rest >= 100 else " And ")
            return f"{_number_words(head)} {word}" + (f"{joint}{_number_words(rest)}" if rest else "")
    return ""


def _in_words(amount: Decimal, currency: str, places: int) -> str:
    """frappe.utils.money_in_words: "USD One Hundred And Forty Two and Seventy Four Cent only."."""
    whole, fraction = divmod(abs(_round(amount, places)), 1)
    text = f"{currency} {_number_words(int(whole))}"
    if places and fraction:
        text += f" and {_number_words(int(fraction * 10**places))} Cent"
    return f"{'Minus ' if amount < 0 else ''}{text} only."


def _address_display(address: Mapping[str, Any]) -> str:
    """Frappe's default address template (the US one: no country line for the home country)."""
    text = f"{address.get('address_line1')}<br>\n"
    if address.get("address_line2"):
        text += f"{address['address_line2']}<br>\n"
    text += f"{address.get('city')}, {address.get('state') or ''} {address.get('pincode') or ''}".rstrip()
    text = text.replace(",  ", ",  ") + "<br>"
    if address.get("country") and address.get("country") != "United States":
        text += f"\n{address['country']}<br>"
    return text


def _body() -> dict[str, Any]:
    raw = request.get_data()
    if not raw:
        return request.form.to_dict()
    try:
        value = json.loads(raw, parse_float=Decimal)
    except ValueError:
        return request.form.to_dict()
    if not isinstance(value, dict):
        raise FrappeError("ValidationError", "a JSON object is expected")
    return value


def _json_arg(value: Any, default: Any) -> Any:
    if value in (None, ""):
        return default
    if isinstance(value, str):
        try:
            return json.loads(value, parse_float=Decimal)
        except json.JSONDecodeError as exc:  # frappe.parse_json does not catch it [8g]
            raise FrappeError("JSONDecodeError", module="json.decoder", status=500,
                              exception=str(exc)) from None
    return value


def _conditions(doctype: str, filters: Any) -> list[tuple[str, str, str, Any]]:
    """Frappe's filter shapes as (doctype, field, operator, value)."""
    out: list[tuple[str, str, str, Any]] = []
    if isinstance(filters, dict):
        for key, value in filters.items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]).lower() in _OPS:
                out.append((doctype, key, str(value[0]).lower(), value[1]))
            else:
                out.append((doctype, key, "=", value))
    elif isinstance(filters, list):
        for item in filters:
            if not isinstance(item, list) or len(item) not in (3, 4):
                raise FrappeError("ValidationError", f"invalid filter: {item!r}")
            dt, f, op, v = item if len(item) == 4 else (doctype, *item)
            op = str(op).lower()
            if op not in _OPS:
                raise FrappeError("ValidationError", f"Operator must be one of {', '.join(_OPS)}")
            known = CHILD_META.get(dt) or (META.get(dt, {}).get("fields"))
            if known is None or f not in (*CHILD_STANDARD, *known):
                raise FrappeError("DataError", f"Field not permitted in query: {f}")
            out.append((dt, f, op, v))
    return out


def _test(doctype: str, actual: Any, op: str, expected: Any) -> bool:
    def norm(value: Any) -> Any:
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            return Decimal(value)
        if isinstance(value, str):
            try:
                if isinstance(actual, int | Decimal):
                    return Decimal(value)
            except InvalidOperation:
                pass
            return value.casefold()  # MariaDB utf8mb4_unicode_ci compares case-insensitively
        return "" if value is None else value

    a = norm(actual)
    if op == "is":
        is_set = actual not in (None, "")
        return is_set if str(expected).lower() == "set" else not is_set
    if op in ("in", "not in"):
        values = expected if isinstance(expected, list) else str(expected).split(",")
        found = a in [norm(v.strip() if isinstance(v, str) else v) for v in values]
        return found if op == "in" else not found
    if op in ("like", "not like"):
        pattern = "^" + ".*".join(re.escape(p) for p in str(expected).casefold().split("%")) + "$"
        hit = re.match(pattern.replace("_", "."), str(a)) is not None
        return hit if op == "like" else not hit
    if op == "between":
        low, high = (norm(v) for v in expected)
        return low <= a <= high
    b = norm(expected)
    try:
        return {"=": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b,
                ">=": a >= b}[op]
    except TypeError:
        return False


def _sorted(rows: list[dict[str, Any]], order_by: str) -> list[dict[str, Any]]:
    for part in reversed([p.strip() for p in order_by.split(",") if p.strip()]):
        field, _, direction = part.replace("`", "").partition(" ")
        field = field.rsplit(".", 1)[-1]

        def key(row: dict[str, Any], field: str = field) -> Any:
            value = row["__sort"].get(field)
            return (value is not None, str(value) if not isinstance(value, Decimal) else value)

        rows = sorted(rows, key=key, reverse=direction.strip().lower() == "desc")
    return rows


def _append_number(base: str, existing: Mapping[str, Any]) -> str:
    """frappe.model.naming.append_number_if_name_exists."""
    if base not in existing:
        return base
    numbers = [int(n.rsplit("-", 1)[1]) for n in existing
               if n.startswith(f"{base}-") and n.rsplit("-", 1)[1].isdigit()]
    return f"{base}-{max(numbers, default=0) + 1}"

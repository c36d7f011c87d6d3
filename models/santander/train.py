#!/usr/bin/env python3
"""Train and export the bundled `santander` model of ml-api (tooling only; the product is Rust).

Default: draws a deterministic SYNTHETIC data set that follows the public schema of the Kaggle
"Santander Product Recommendation" data (train_ver2.csv), trains a scikit-learn Pipeline
(ColumnTransformer[OneHotEncoder | SimpleImputer+StandardScaler] -> multinomial
LogisticRegression over 22 products), exports it with skl2onnx and writes, next to this file:

    model.onnx   20 inputs, one per feature, each [N, 1]; outputs label int64 [N],
                 probabilities float [N, 22]
    card.json    model card read by the server (labels, field validation, example, metrics)
    golden.json  reference outputs of Python onnxruntime for ~20 records

Usage:
    python train.py                          # synthetic data (default), writes the artifacts
    python train.py --train-csv train_ver2.csv [--out-dir DIR] [--max-rows N]
    python train.py --self-test-real-path    # fake 48-column CSV -> real-data path, end to end
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SEED = 20240611
N_ROWS = 80_000
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}

# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------
# The 24 fields of the request record, in train_ver2.csv order.
RECORD_FIELDS = [
    "fecha_dato", "ncodpers", "ind_empleado", "pais_residencia", "sexo", "age", "fecha_alta",
    "ind_nuevo", "antiguedad", "indrel", "ult_fec_cli_1t", "indrel_1mes", "tiprel_1mes",
    "indresi", "indext", "conyuemp", "canal_entrada", "indfall", "tipodom", "cod_prov",
    "nomprov", "ind_actividad_cliente", "renta", "segmento",
]
IGNORED_FIELDS = {
    "fecha_dato": "snapshot date of the record (YYYY-MM-DD); not a feature",
    "ncodpers": "customer identifier, not a feature",
    "fecha_alta": "date the customer became the first holder of a contract in the bank; not a feature",
    "ult_fec_cli_1t": "last date as primary customer, if not primary at the end of the month; not a feature",
}
STRING_FEATURES = [
    "ind_empleado", "pais_residencia", "sexo", "tiprel_1mes", "indresi", "indext", "conyuemp",
    "canal_entrada", "indfall", "nomprov", "segmento",
]
INT_FEATURES = [
    "age", "ind_nuevo", "antiguedad", "indrel", "indrel_1mes", "tipodom", "cod_prov",
    "ind_actividad_cliente",
]
FLOAT_FEATURES = ["renta"]
# ONNX input order = record order less the ignored fields.
FEATURES = [f for f in RECORD_FIELDS if f not in IGNORED_FIELDS]
assert sorted(FEATURES) == sorted(STRING_FEATURES + INT_FEATURES + FLOAT_FEATURES)
assert len(FEATURES) == 20

ALL_PRODUCTS = [
    "ind_ahor_fin_ult1", "ind_aval_fin_ult1", "ind_cco_fin_ult1", "ind_cder_fin_ult1",
    "ind_cno_fin_ult1", "ind_ctju_fin_ult1", "ind_ctma_fin_ult1", "ind_ctop_fin_ult1",
    "ind_ctpp_fin_ult1", "ind_deco_fin_ult1", "ind_deme_fin_ult1", "ind_dela_fin_ult1",
    "ind_ecue_fin_ult1", "ind_fond_fin_ult1", "ind_hip_fin_ult1", "ind_plan_fin_ult1",
    "ind_pres_fin_ult1", "ind_reca_fin_ult1", "ind_tjcr_fin_ult1", "ind_valo_fin_ult1",
    "ind_viv_fin_ult1", "ind_nomina_ult1", "ind_nom_pens_ult1", "ind_recibo_ult1",
]
EXCLUDED_PRODUCTS = ["ind_ahor_fin_ult1", "ind_aval_fin_ult1"]
LABELS = [p for p in ALL_PRODUCTS if p not in EXCLUDED_PRODUCTS]
assert len(LABELS) == 22
CSV_COLUMNS = RECORD_FIELDS + ALL_PRODUCTS
assert len(CSV_COLUMNS) == 48

SEED_RECORD = {
    "fecha_dato": "2016-06-28",
    "ncodpers": 15889,
    "ind_empleado": "F",
    "pais_residencia": "ES",
    "sexo": "V",
    "age": 56,
    "fecha_alta": "1995-01-16",
    "ind_nuevo": 0,
    "antiguedad": 256,
    "indrel": 1,
    "ult_fec_cli_1t": "",
    "indrel_1mes": 1,
    "tiprel_1mes": "A",
    "indresi": "S",
    "indext": "N",
    "conyuemp": "N",
    "canal_entrada": "KAT",
    "indfall": "N",
    "tipodom": 1,
    "cod_prov": 28,
    "nomprov": "MADRID",
    "ind_actividad_cliente": 1,
    "renta": 326124.9,
    "segmento": "01 - TOP",
}

# Spanish provinces by INE code, spelled as in train_ver2.csv, with rough customer shares.
PROVINCES = {
    1: ("ALAVA", 0.4), 2: ("ALBACETE", 0.6), 3: ("ALICANTE", 2.4), 4: ("ALMERIA", 0.5),
    5: ("AVILA", 0.3), 6: ("BADAJOZ", 1.6), 7: ("BALEARS, ILLES", 1.1), 8: ("BARCELONA", 9.5),
    9: ("BURGOS", 1.2), 10: ("CACERES", 0.9), 11: ("CADIZ", 2.2), 12: ("CASTELLON", 0.7),
    13: ("CIUDAD REAL", 0.9), 14: ("CORDOBA", 0.7), 15: ("CORUÑA, A", 3.3), 16: ("CUENCA", 0.3),
    17: ("GIRONA", 0.4), 18: ("GRANADA", 1.4), 19: ("GUADALAJARA", 0.4), 20: ("GIPUZKOA", 0.5),
    21: ("HUELVA", 0.8), 22: ("HUESCA", 0.3), 23: ("JAEN", 0.6), 24: ("LEON", 0.9),
    25: ("LERIDA", 0.5), 26: ("RIOJA, LA", 0.6), 27: ("LUGO", 0.7), 28: ("MADRID", 32.5),
    29: ("MALAGA", 2.8), 30: ("MURCIA", 2.9), 31: ("NAVARRA", 0.7), 32: ("OURENSE", 0.5),
    33: ("ASTURIAS", 2.1), 34: ("PALENCIA", 0.3), 35: ("PALMAS, LAS", 1.8), 36: ("PONTEVEDRA", 2.2),
    37: ("SALAMANCA", 1.3), 38: ("SANTA CRUZ DE TENERIFE", 0.9), 39: ("CANTABRIA", 1.2),
    40: ("SEGOVIA", 0.3), 41: ("SEVILLA", 4.4), 42: ("SORIA", 0.2), 43: ("TARRAGONA", 0.6),
    44: ("TERUEL", 0.2), 45: ("TOLEDO", 1.4), 46: ("VALENCIA", 5.8), 47: ("VALLADOLID", 1.8),
    48: ("BIZKAIA", 1.5), 49: ("ZAMORA", 0.4), 50: ("ZARAGOZA", 2.6), 51: ("CEUTA", 0.1),
    52: ("MELILLA", 0.1),
}
# Entry channels (real codes of the data set) with rough shares.
CHANNELS = {
    "KHE": 24.0, "KAT": 23.5, "KFC": 22.0, "KHQ": 4.0, "KFA": 3.0, "KHK": 2.5, "KHM": 1.8,
    "KHD": 1.2, "KHN": 1.1, "KAS": 0.9, "RED": 0.8, "KAG": 0.7, "KAY": 0.7, "KAA": 0.6,
    "KAB": 0.6, "013": 0.5, "KAE": 0.5, "KCC": 0.4, "KBZ": 0.4, "KHL": 0.3, "KFD": 0.3,
    "KAI": 0.3, "KEY": 0.3, "KAW": 0.3, "KAJ": 0.25, "KAF": 0.25, "KAR": 0.2, "KBO": 0.2,
    "KCI": 0.2, "KAH": 0.2, "KAZ": 0.2, "007": 0.15, "KCH": 0.15, "KBH": 0.15, "KAQ": 0.15,
    "KAM": 0.1, "KEW": 0.1, "KAD": 0.1, "KCB": 0.1, "KAP": 0.1, "KDR": 0.1, "KFF": 0.1,
}
# Residence countries: ES dominates.
COUNTRIES = {
    "ES": 99.4, "FR": 0.04, "AR": 0.03, "DE": 0.03, "GB": 0.03, "US": 0.025, "CO": 0.02,
    "IT": 0.02, "RO": 0.02, "MX": 0.02, "EC": 0.015, "VE": 0.015, "PE": 0.015, "BR": 0.015,
    "CH": 0.015, "BE": 0.012, "PT": 0.012, "BO": 0.01, "CN": 0.01, "CU": 0.01, "NL": 0.01,
    "PY": 0.008, "DO": 0.008, "UY": 0.008, "IE": 0.008, "RU": 0.008, "MA": 0.006, "SE": 0.006,
    "AT": 0.006, "PL": 0.006, "CL": 0.006, "IN": 0.005, "JP": 0.005, "CA": 0.005, "NG": 0.004,
    "AD": 0.004, "SN": 0.004, "GT": 0.004, "HN": 0.004, "DK": 0.004,
}
SEGMENTS = ["01 - TOP", "02 - PARTICULARES", "03 - UNIVERSITARIO"]

FIELD_SPECS = {
    # string fields: description, unknown policy (categories come from training)
    "ind_empleado": ("Employee index: A active, B ex-employed, F filial, N not employee, S passive", "reject"),
    "pais_residencia": ("Customer's country of residence (ISO 3166-1 alpha-2, e.g. ES)", "accept"),
    "sexo": ("Customer's sex as coded in the data set: H or V", "reject"),
    "tiprel_1mes": ("Customer relation type at the beginning of the month: A active, I inactive, P former customer, R potential, N", "reject"),
    "indresi": ("Residence index: S if the residence country is the bank's country (Spain), N otherwise", "reject"),
    "indext": ("Foreigner index: S if the customer's birth country differs from the bank's country, N otherwise", "reject"),
    "conyuemp": ("Spouse index: S if the customer is the spouse of an employee, N otherwise", "reject"),
    "canal_entrada": ("Channel the customer joined through (bank channel code, e.g. KAT, KHE, KFC, 013)", "accept"),
    "indfall": ("Deceased index: S or N", "reject"),
    "nomprov": ("Province name of the customer's address, upper case as in the data set (e.g. MADRID)", "accept"),
    "segmento": ("Segmentation: 01 - TOP (VIP), 02 - PARTICULARES (individuals), 03 - UNIVERSITARIO (college graduates)", "reject"),
}
NUMERIC_SPECS = {
    "age": ("Customer age in years", 0, 130),
    "ind_nuevo": ("New customer index: 1 if the customer registered in the last 6 months, else 0", 0, 1),
    "antiguedad": ("Customer seniority in months", 0, 600),
    "indrel": ("1 = first/primary customer, 99 = primary customer during the month but not at its end", 1, 99),
    "indrel_1mes": ("Customer type at the beginning of the month: 1 primary, 2 co-owner, 3 former primary, 4 former co-owner, 5 potential (the data set's 'P')", 1, 5),
    "tipodom": ("Address type: 1 = primary address", 0, 1),
    "cod_prov": ("Province code (INE, 1-52) of the customer's address; 0 = unknown", 0, 52),
    "ind_actividad_cliente": ("Activity index: 1 active customer, 0 inactive", 0, 1),
    "renta": ("Gross income of the household in EUR; null when unknown (imputed with the training median inside the model)", 0, 100_000_000),
}


def _choice(rng, table: dict, n: int):
    keys = list(table)
    p = np.array([table[k] for k in keys], dtype=float)
    return np.array(keys, dtype=object)[rng.choice(len(keys), size=n, p=p / p.sum())]


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------
def make_synthetic(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Feature frame (20 feature columns) and integer target 0..21."""
    rng = np.random.default_rng(seed)
    # Bimodal age: students/young adults around 23, the main mass around 45.
    young_mode = rng.random(n) < 0.36
    age = np.where(young_mode, rng.normal(23, 2.5, n), rng.normal(47, 13, n))
    age = np.clip(np.rint(age), 18, 100).astype(np.int64)
    old_tail = rng.random(n) < 0.004
    age[old_tail] = rng.integers(85, 101, old_tail.sum())

    seg = np.full(n, SEGMENTS[1], dtype=object)
    u = rng.random(n)
    seg[(age < 27) & (u < 0.82)] = SEGMENTS[2]
    seg[(age >= 27) & (u < 0.08)] = SEGMENTS[2]
    seg[(age >= 30) & (u > 0.93)] = SEGMENTS[0]
    top, univ = seg == SEGMENTS[0], seg == SEGMENTS[2]

    max_months = np.minimum(256, (age - 17) * 12)
    antig = np.floor(max_months * rng.beta(1.1, 1.8, n)).astype(np.int64)
    veteran = (rng.random(n) < 0.08) & (age >= 40)
    antig[veteran] = 256 - rng.integers(0, 12, veteran.sum())
    antig = np.clip(antig, 0, 256)
    ind_nuevo = ((antig <= 6) & (rng.random(n) < 0.9)).astype(np.int64)

    p_active = np.where(univ, 0.25, np.where(top, 0.78, 0.55))
    active = (rng.random(n) < p_active).astype(np.int64)
    tiprel = np.where(active == 1, "A", "I").astype(object)
    r = rng.random(n)
    tiprel[r < 0.0006] = "P"
    tiprel[(r >= 0.0006) & (r < 0.0010)] = "R"
    tiprel[(r >= 0.0010) & (r < 0.0013)] = "N"
    indrel = np.where(rng.random(n) < 0.002, 99, 1).astype(np.int64)
    indrel_1mes = rng.choice([1, 2, 3, 4], size=n, p=[0.994, 0.001, 0.004, 0.001]).astype(np.int64)

    pais = _choice(rng, COUNTRIES, n)
    foreign_res = pais != "ES"
    indresi = np.where(foreign_res & (rng.random(n) < 0.8), "N", "S").astype(object)
    indext = np.where(rng.random(n) < np.where(foreign_res, 0.85, 0.045), "S", "N").astype(object)
    codes = list(PROVINCES)
    pp = np.array([PROVINCES[c][1] for c in codes])
    cod_prov = np.array(codes, dtype=np.int64)[rng.choice(len(codes), size=n, p=pp / pp.sum())]
    nomprov = np.array([PROVINCES[c][0] for c in cod_prov], dtype=object)

    ind_empleado = _choice(rng, {"N": 99.8, "A": 0.05, "B": 0.05, "F": 0.05, "S": 0.05}, n)
    sexo = np.where(rng.random(n) < np.where(age > 35, 0.56, 0.48), "V", "H").astype(object)
    conyuemp = np.where(rng.random(n) < 0.0008, "S", "N").astype(object)
    indfall = np.where(rng.random(n) < np.where(age > 75, 0.02, 0.0015), "S", "N").astype(object)
    canal = _choice(rng, CHANNELS, n)
    # Young customers mostly joined through KHE/KFC-style channels.
    khe = univ & (rng.random(n) < 0.5)
    canal[khe] = "KHE"
    tipodom = np.ones(n, dtype=np.int64)

    log_renta = (np.log(95_000) + 0.55 * top - 0.15 * univ + 0.15 * (age > 40)
                 + 0.25 * (cod_prov == 28) + rng.normal(0, 0.55, n))
    renta_true = np.clip(np.exp(log_renta), 1_200, 28_000_000)
    renta = np.round(renta_true, 2)
    renta[rng.random(n) < 0.20] = np.nan

    X = pd.DataFrame({
        "ind_empleado": ind_empleado, "pais_residencia": pais, "sexo": sexo, "age": age,
        "ind_nuevo": ind_nuevo, "antiguedad": antig, "indrel": indrel,
        "indrel_1mes": indrel_1mes, "tiprel_1mes": tiprel, "indresi": indresi,
        "indext": indext, "conyuemp": conyuemp, "canal_entrada": canal, "indfall": indfall,
        "tipodom": tipodom, "cod_prov": cod_prov, "nomprov": nomprov,
        "ind_actividad_cliente": active, "renta": renta, "segmento": seg,
    })[FEATURES]

    # Next-product target: softmax over plausible feature effects, sampled (Gumbel-max).
    base = {
        "ind_cco_fin_ult1": 0.10, "ind_cder_fin_ult1": 0.004, "ind_cno_fin_ult1": 0.03,
        "ind_ctju_fin_ult1": 0.004, "ind_ctma_fin_ult1": 0.02, "ind_ctop_fin_ult1": 0.012,
        "ind_ctpp_fin_ult1": 0.008, "ind_deco_fin_ult1": 0.005, "ind_deme_fin_ult1": 0.004,
        "ind_dela_fin_ult1": 0.02, "ind_ecue_fin_ult1": 0.05, "ind_fond_fin_ult1": 0.01,
        "ind_hip_fin_ult1": 0.004, "ind_plan_fin_ult1": 0.006, "ind_pres_fin_ult1": 0.004,
        "ind_reca_fin_ult1": 0.04, "ind_tjcr_fin_ult1": 0.10, "ind_valo_fin_ult1": 0.012,
        "ind_viv_fin_ult1": 0.004, "ind_nomina_ult1": 0.13, "ind_nom_pens_ult1": 0.15,
        "ind_recibo_ult1": 0.20,
    }
    lr = np.log(renta_true / 100_000)
    f = lambda b: b.astype(float)  # noqa: E731
    senior, young = f(age >= 60), f(age < 25)
    new = f(antig < 12)
    ten = antig / 100.0
    topf, univf, act = f(top), f(univ), active.astype(float)
    mid = f((age >= 25) & (age < 60))
    eff = {
        "ind_cco_fin_ult1": 1.0 * new + 0.6 * univf + 0.3 * f(canal == "KHE"),
        "ind_cder_fin_ult1": 1.0 * senior + 0.6 * f(indext == "S"),
        "ind_cno_fin_ult1": 0.9 * act - 0.6 * young,
        "ind_ctju_fin_ult1": 3.2 * f(age < 21) + 0.8 * univf,
        "ind_ctma_fin_ult1": 0.9 * f(indext == "S") + 0.6 * new,
        "ind_ctop_fin_ult1": 0.8 * new + 0.4 * f(np.isin(canal, ["KFC", "KAT"])),
        "ind_ctpp_fin_ult1": 1.3 * topf + 0.6 * lr,
        "ind_deco_fin_ult1": 1.3 * new,
        "ind_deme_fin_ult1": 1.2 * senior,
        "ind_dela_fin_ult1": 0.9 * senior + 0.6 * lr + 0.6 * topf,
        "ind_ecue_fin_ult1": 1.3 * univf + 0.8 * young + 0.4 * f(np.isin(cod_prov, [8, 28])),
        "ind_fond_fin_ult1": 1.9 * topf + 1.0 * lr + 0.4 * senior,
        "ind_hip_fin_ult1": 0.9 * f((age >= 30) & (age < 46)) + 0.5 * ten - 0.6 * univf + 0.5 * act,
        "ind_plan_fin_ult1": 1.5 * topf + 0.8 * lr + 0.8 * f((age >= 45) & (age < 66)),
        "ind_pres_fin_ult1": 0.7 * act + 0.6 * f((age >= 25) & (age < 46)),
        "ind_reca_fin_ult1": 0.9 * topf + 0.6 * lr - 0.6 * univf,
        "ind_tjcr_fin_ult1": 0.9 * act + 0.3 * f(sexo == "V") + 0.3 * mid,
        "ind_valo_fin_ult1": 1.7 * topf + 1.1 * lr + 0.5 * senior,
        "ind_viv_fin_ult1": 0.9 * f((age >= 30) & (age < 51)) + 0.5 * topf,
        "ind_nomina_ult1": 1.9 * act - 1.1 * univf + 0.6 * mid - 0.8 * senior,
        "ind_nom_pens_ult1": 1.9 * act - 1.1 * univf + 0.5 * mid + 0.4 * senior,
        "ind_recibo_ult1": 1.3 * act + 0.3 * ten,
    }
    logits = np.stack([np.log(base[k]) + eff[k] for k in LABELS], axis=1)
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1).astype(np.int64)
    missing = set(range(22)) - set(np.unique(y))
    assert not missing, f"classes missing from synthetic data: {missing}"
    return X, y


# --------------------------------------------------------------------------------------------
# Real data (Kaggle train_ver2.csv)
# --------------------------------------------------------------------------------------------
def _num(s: pd.Series) -> pd.Series:
    """Padded strings, ' NA', '' -> float with NaN."""
    return pd.to_numeric(s.astype("string").str.strip(), errors="coerce")


def load_real(csv_path: str, chunksize: int = 1_000_000, max_rows: int | None = None,
              seed: int = SEED) -> tuple[pd.DataFrame, np.ndarray]:
    """Reads train_ver2.csv and builds one row per product added from one month to the next.

    Features come from the customer's record of the month BEFORE the addition (what the server
    is given: the current record; the target is what gets added next month).

    Quirks handled:
      * age / antiguedad / renta / ind_nuevo / indrel / tipodom / cod_prov / ind_actividad_cliente
        are read as strings (padded like '  35', '     NA', '') and parsed; antiguedad -999999 -> 0;
        age clipped to 0..130.
      * indrel_1mes mixes 1, '1', '1.0', '2.0', 'P': parsed as number, 'P' (potential) -> 5,
        missing -> 1 (the mode).
      * missing strings (NaN / blanks) -> '' (a category of its own).
      * rows with no age / antiguedad / activity (the all-empty rows) are dropped from training;
        missing cod_prov -> 0 (nomprov ''), missing tipodom -> 1, missing ind_nuevo -> 0,
        missing indrel -> 1.
      * product flags that are NA count as 0.
    """
    usecols = CSV_COLUMNS
    str_dtypes = {c: "string" for c in RECORD_FIELDS}
    parts = []
    for chunk in pd.read_csv(csv_path, usecols=usecols, dtype=str_dtypes | {p: "float32" for p in ALL_PRODUCTS},
                             chunksize=chunksize, keep_default_na=False, na_values=["", " NA", "NA", "     NA"],
                             low_memory=False):
        out = pd.DataFrame(index=chunk.index)
        out["ncodpers"] = _num(chunk["ncodpers"]).astype("Int64")
        out["month"] = pd.to_datetime(chunk["fecha_dato"].str.strip(), errors="coerce")
        for c in STRING_FEATURES:
            out[c] = chunk[c].astype("string").str.strip().fillna("").astype("category")
        i1 = chunk["indrel_1mes"].astype("string").str.strip()
        i1n = pd.to_numeric(i1, errors="coerce")
        i1n[i1 == "P"] = 5
        out["indrel_1mes"] = i1n.fillna(1)
        for c in ["age", "ind_nuevo", "antiguedad", "indrel", "tipodom", "cod_prov",
                  "ind_actividad_cliente", "renta"]:
            out[c] = _num(chunk[c]).astype("float64")
        prods = chunk[ALL_PRODUCTS].fillna(0).astype(np.int8)
        parts.append(pd.concat([out, prods], axis=1))
    # union_categoricals keeps the string columns compact (plain concat would fall back to object).
    from pandas.api.types import union_categoricals
    cats = {c: union_categoricals([p[c] for p in parts], ignore_order=True) for c in STRING_FEATURES}
    df = pd.concat([p.drop(columns=STRING_FEATURES) for p in parts], ignore_index=True)
    for c in STRING_FEATURES:
        df[c] = cats[c]
    del parts, cats
    df = df.dropna(subset=["ncodpers", "month"])
    df["month_idx"] = df["month"].dt.year * 12 + df["month"].dt.month
    df = df.sort_values(["ncodpers", "month_idx"], kind="stable").reset_index(drop=True)

    same = (df["ncodpers"].shift(-1) == df["ncodpers"]) & (df["month_idx"].shift(-1) == df["month_idx"] + 1)
    same = same.fillna(False).to_numpy(bool)
    cur = df[LABELS].to_numpy(np.int8)
    nxt = np.vstack([cur[1:], np.zeros((1, cur.shape[1]), np.int8)])
    added = (nxt == 1) & (cur == 0) & same[:, None]
    rows, cls = np.nonzero(added)  # one training row per added product
    feats = df.iloc[rows].reset_index(drop=True)
    y = cls.astype(np.int64)

    ok = feats[["age", "antiguedad", "ind_actividad_cliente"]].notna().all(axis=1).to_numpy()
    feats, y = feats[ok].reset_index(drop=True), y[ok]
    feats["antiguedad"] = feats["antiguedad"].where(feats["antiguedad"] >= 0, 0)
    feats["age"] = feats["age"].clip(0, 130)
    fills = {"cod_prov": 0, "tipodom": 1, "ind_nuevo": 0, "indrel": 1}
    feats = feats.fillna(fills)
    if max_rows and len(feats) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(feats), size=max_rows, replace=False))
        feats, y = feats.iloc[idx].reset_index(drop=True), y[idx]
    X = pd.DataFrame({c: feats[c].astype(str).astype(object) for c in STRING_FEATURES})
    for c in INT_FEATURES:
        X[c] = np.rint(feats[c].to_numpy(float)).astype(np.int64)
    X["renta"] = feats["renta"].to_numpy(float)
    X = X[FEATURES]
    missing = set(range(22)) - set(np.unique(y))
    if missing:
        raise SystemExit(f"these products are never added in {csv_path}: {[LABELS[i] for i in sorted(missing)]}")
    return X, y


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def build_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore"), STRING_FEATURES),
        ("int", StandardScaler(), INT_FEATURES),
        ("renta", Pipeline([("impute", SimpleImputer(strategy="median")),
                            ("scale", StandardScaler())]), FLOAT_FEATURES),
    ])
    # lbfgs on more than two classes is the multinomial (softmax) loss.
    clf = LogisticRegression(solver="lbfgs", C=1.0, max_iter=1000)
    return Pipeline([("pre", pre), ("clf", clf)])


def prepare(X: pd.DataFrame) -> pd.DataFrame:
    X = X.copy()
    for c in STRING_FEATURES:
        X[c] = X[c].astype(str).astype(object)
    for c in INT_FEATURES:
        X[c] = X[c].astype(np.int64)
    X["renta"] = X["renta"].astype(np.float64)
    return X


def export_onnx(pipe, path: Path):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    kinds = {**{c: StringTensorType for c in STRING_FEATURES},
             **{c: Int64TensorType for c in INT_FEATURES},
             **{c: FloatTensorType for c in FLOAT_FEATURES}}
    initial_types = [(c, kinds[c]([None, 1])) for c in FEATURES]
    clf = pipe.named_steps["clf"]
    onx = convert_sklearn(pipe, name="santander", initial_types=initial_types,
                          options={id(clf): {"zipmap": False}}, target_opset=TARGET_OPSET)
    onx.doc_string = "ml-api santander next-product model (see card.json)"
    # skl2onnx collects opsets in a set: sort them so the bytes do not depend on PYTHONHASHSEED.
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    import onnx
    onnx.checker.check_model(onx)
    path.write_bytes(onx.SerializeToString())


def record_feeds(record: dict) -> dict:
    feeds = {}
    for c in STRING_FEATURES:
        feeds[c] = np.array([[record[c]]], dtype=object)
    for c in INT_FEATURES:
        feeds[c] = np.array([[record[c]]], dtype=np.int64)
    v = record["renta"]
    feeds["renta"] = np.array([[np.nan if v is None else v]], dtype=np.float32)
    return feeds


def frame_feeds(X: pd.DataFrame) -> dict:
    feeds = {}
    for c in STRING_FEATURES:
        feeds[c] = X[c].to_numpy(object).reshape(-1, 1)
    for c in INT_FEATURES:
        feeds[c] = X[c].to_numpy(np.int64).reshape(-1, 1)
    feeds["renta"] = X["renta"].to_numpy(np.float32).reshape(-1, 1)
    return feeds


def metrics_of(proba: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import log_loss
    top5 = np.argsort(-proba, axis=1)[:, :5]
    return {
        "accuracy": round(float(np.mean(np.argmax(proba, axis=1) == y)), 4),
        "log_loss": round(float(log_loss(y, proba, labels=list(range(22)))), 4),
        "top5_hit_rate": round(float(np.mean((top5 == y[:, None]).any(axis=1))), 4),
    }


def golden_records() -> list[dict]:
    def rec(**kw):
        r = dict(SEED_RECORD)
        r.update(kw)
        return r
    return [
        dict(SEED_RECORD),
        rec(ncodpers=1050611, ind_empleado="N", sexo="H", age=22, ind_nuevo=0, antiguedad=35,
            fecha_alta="2012-08-10", tiprel_1mes="I", canal_entrada="KHE", cod_prov=29, nomprov="MALAGA",
            ind_actividad_cliente=0, renta=68000.25, segmento="03 - UNIVERSITARIO"),
        rec(ncodpers=1170544, ind_empleado="N", sexo="H", age=19, ind_nuevo=1, antiguedad=2,
            fecha_alta="2016-04-11", tiprel_1mes="A", canal_entrada="KHE", cod_prov=8, nomprov="BARCELONA",
            ind_actividad_cliente=1, renta=None, segmento="03 - UNIVERSITARIO"),
        rec(ncodpers=1050612, ind_empleado="N", sexo="V", age=35, antiguedad=120,
            canal_entrada="KFC", cod_prov=46, nomprov="VALENCIA", renta=95000.0, segmento="02 - PARTICULARES"),
        rec(ncodpers=500123, ind_empleado="N", sexo="V", age=67, antiguedad=230,
            canal_entrada="KAT", cod_prov=41, nomprov="SEVILLA", renta=None, segmento="02 - PARTICULARES"),
        rec(ncodpers=720001, ind_empleado="N", sexo="H", age=48, antiguedad=180, canal_entrada="KAT",
            cod_prov=28, nomprov="MADRID", renta=1250000.0, segmento="01 - TOP"),
        rec(ncodpers=880002, ind_empleado="N", sexo="V", age=41, antiguedad=60, canal_entrada="ZZZ",
            cod_prov=15, nomprov="CORUÑA, A", renta=54000.5, segmento="02 - PARTICULARES"),
        rec(ncodpers=880003, ind_empleado="N", pais_residencia="FR", indresi="N", indext="S", sexo="H",
            age=33, antiguedad=14, canal_entrada="KHQ", cod_prov=7, nomprov="BALEARS, ILLES",
            renta=41000.0, segmento="02 - PARTICULARES"),
        rec(ncodpers=880004, ind_empleado="N", sexo="V", age=29, ind_nuevo=1, antiguedad=4,
            canal_entrada="KHK", cod_prov=30, nomprov="MURCIA", tiprel_1mes="A", renta=33000.0,
            segmento="02 - PARTICULARES"),
        rec(ncodpers=880005, ind_empleado="N", sexo="H", age=88, antiguedad=256, canal_entrada="013",
            cod_prov=33, nomprov="ASTURIAS", ind_actividad_cliente=0, tiprel_1mes="I", renta=72000.0,
            segmento="02 - PARTICULARES"),
        rec(ncodpers=880006, ind_empleado="A", sexo="V", age=52, antiguedad=200, canal_entrada="KFA",
            cod_prov=50, nomprov="ZARAGOZA", renta=140000.0, segmento="01 - TOP"),
        rec(ncodpers=880007, ind_empleado="N", sexo="H", age=24, antiguedad=30, canal_entrada="KFC",
            cod_prov=36, nomprov="PONTEVEDRA", ind_actividad_cliente=1, renta=26000.0,
            segmento="03 - UNIVERSITARIO"),
        rec(ncodpers=880008, ind_empleado="N", sexo="V", age=45, antiguedad=90, indrel=99,
            indrel_1mes=3, tiprel_1mes="I", canal_entrada="KHM", cod_prov=11, nomprov="CADIZ",
            ind_actividad_cliente=0, renta=None, segmento="02 - PARTICULARES"),
        rec(ncodpers=880009, ind_empleado="N", sexo="H", age=37, antiguedad=150, indrel_1mes=2,
            canal_entrada="KHD", cod_prov=48, nomprov="BIZKAIA", renta=210000.0, segmento="01 - TOP"),
        rec(ncodpers=880010, ind_empleado="N", sexo="V", age=60, antiguedad=256, conyuemp="S",
            canal_entrada="KAT", cod_prov=38, nomprov="SANTA CRUZ DE TENERIFE", renta=88000.0,
            segmento="02 - PARTICULARES"),
        rec(ncodpers=880011, ind_empleado="N", sexo="H", age=76, antiguedad=240, indfall="S",
            canal_entrada="KAT", cod_prov=47, nomprov="VALLADOLID", ind_actividad_cliente=0,
            tiprel_1mes="I", renta=61000.0, segmento="02 - PARTICULARES"),
        rec(ncodpers=880012, ind_empleado="N", sexo="V", age=31, ind_nuevo=1, antiguedad=0,
            canal_entrada="RED", cod_prov=52, nomprov="MELILLA", renta=1500.0, segmento="02 - PARTICULARES"),
        rec(ncodpers=880013, ind_empleado="N", sexo="H", age=27, antiguedad=40, canal_entrada="KAS",
            cod_prov=28, nomprov="MADRID", tiprel_1mes="P", ind_actividad_cliente=0, renta=None,
            segmento="03 - UNIVERSITARIO"),
        rec(ncodpers=880014, ind_empleado="N", sexo="V", age=58, antiguedad=256, canal_entrada="KAT",
            cod_prov=28, nomprov="MADRID", renta=2500000.0, segmento="01 - TOP"),
        rec(ncodpers=880015, ind_empleado="N", pais_residencia="XX", sexo="H", age=44, antiguedad=75,
            canal_entrada="K99", cod_prov=8, nomprov="BARCELONA", renta=77000.0,
            segmento="02 - PARTICULARES"),
    ]


def make_card(pipe, data: str, rows: int, seed: int, metrics: dict, description: str) -> dict:
    import sklearn
    enc = pipe.named_steps["pre"].named_transformers_["cat"]
    cats = dict(zip(STRING_FEATURES, enc.categories_))
    fields = {}
    for c in FEATURES:
        if c in FIELD_SPECS:
            desc, unknown = FIELD_SPECS[c]
            fields[c] = {"description": desc, "categories": [str(v) for v in cats[c]], "unknown": unknown}
        else:
            desc, lo, hi = NUMERIC_SPECS[c]
            fields[c] = {"description": desc, "min": lo, "max": hi}
            if c == "renta":
                fields[c]["nullable"] = True
    return {
        "name": "santander",
        "version": "1.0.0",
        "description": description,
        "output": "probabilities",
        "labels": LABELS,
        "fields": fields,
        "ignored_fields": IGNORED_FIELDS,
        "example": dict(SEED_RECORD),
        "training": {"data": data, "rows": int(rows), "seed": int(seed), "sklearn": sklearn.__version__,
                     "metrics": metrics},
    }


def validate(card: dict, record: dict) -> list[str]:
    """What the server's validator is expected to do; used to check the golden records."""
    errs = []
    for name, spec in card["fields"].items():
        if name not in record:
            errs.append(f"{name}: missing")
            continue
        v = record[name]
        if "categories" in spec:
            if not isinstance(v, str):
                errs.append(f"{name}: not a string")
            elif spec["unknown"] == "reject" and v not in spec["categories"]:
                errs.append(f"{name}: unknown category {v!r}")
        else:
            if v is None:
                if not spec.get("nullable"):
                    errs.append(f"{name}: null")
                continue
            if not (spec["min"] <= v <= spec["max"]):
                errs.append(f"{name}: {v} out of range")
    return errs


def write_json(path: Path, obj):
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def train_and_export(X: pd.DataFrame, y: np.ndarray, out_dir: Path, data: str, seed: int,
                     description: str) -> dict:
    import onnxruntime as ort
    from sklearn.model_selection import train_test_split

    X = prepare(X)
    strat = y if np.bincount(y).min() >= 2 else None
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=strat)
    if len(set(ytr)) != 22:
        raise SystemExit("every one of the 22 classes must appear in the training split")
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):  # single-threaded BLAS: same bits on every run
        pipe = build_pipeline().fit(Xtr, ytr)
    assert list(pipe.classes_) == list(range(22)), pipe.classes_

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.onnx"
    export_onnx(pipe, model_path)
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    label, proba = sess.run(["label", "probabilities"], frame_feeds(Xte))
    sk_proba = pipe.predict_proba(Xte)
    max_diff = float(np.max(np.abs(sk_proba - proba)))
    assert max_diff < 1e-4, f"onnx vs sklearn differ by {max_diff}"
    p64 = proba.astype(np.float64)
    metrics = metrics_of(p64 / p64.sum(axis=1, keepdims=True), yte)

    card = make_card(pipe, data, len(Xtr), seed, metrics, description)
    golden = []
    for r in golden_records():
        errs = validate(card, r)
        if errs:
            raise SystemExit(f"golden record {r['ncodpers']} does not validate against the card: {errs}")
        lab, pr = sess.run(["label", "probabilities"], record_feeds(r))
        golden.append({"record": r, "probabilities": [float(x) for x in pr[0]], "label": int(lab[0])})
    write_json(out_dir / "card.json", card)
    write_json(out_dir / "golden.json", golden)
    return {"metrics": metrics, "onnx_vs_sklearn_max_abs_diff": max_diff, "train_rows": len(Xtr),
            "test_rows": len(Xte), "model_bytes": model_path.stat().st_size}


SYNTHETIC_DESCRIPTION = (
    "Next-product recommender in the shape of the Kaggle 'Santander Product Recommendation' task: "
    "given one customer record it returns a probability distribution (softmax, sums to 1) over the 22 "
    "products the customer is likeliest to add next month. This bundled model was trained on SYNTHETIC "
    "data drawn to match the public schema of the data set (categories, ranges, rough frequencies, "
    "invented feature/product relationships); its numbers are NOT real recommendations. "
    "scikit-learn Pipeline (one-hot + median-imputed, standardised numerics -> multinomial logistic "
    "regression) exported with skl2onnx."
)
REAL_DESCRIPTION = (
    "Next-product recommender trained on the Kaggle 'Santander Product Recommendation' train_ver2.csv "
    "(one row per product added from one month to the next; features of the month before). Returns a "
    "probability distribution (softmax, sums to 1) over 22 products. scikit-learn Pipeline (one-hot + "
    "median-imputed, standardised numerics -> multinomial logistic regression) exported with skl2onnx."
)


def self_test_real_path() -> None:
    """Writes a tiny fake train_ver2.csv (exact 48-column layout, with its quirks) and runs the
    real-data path end to end into a temp dir."""
    import onnxruntime as ort

    rng = np.random.default_rng(7)
    months = ["2015-01-28", "2015-02-28", "2015-03-28", "2015-04-28"]
    n_cust = 400
    lines = [",".join(f'"{c}"' if i < 2 else c for i, c in enumerate(CSV_COLUMNS))]
    for k in range(n_cust):
        ncod = 10_000 + k
        base = {
            "ind_empleado": rng.choice(["N", "N", "N", "A", "B", "F", "S"]),
            "pais_residencia": rng.choice(["ES", "ES", "ES", "FR"]),
            "sexo": rng.choice(["H", "V", ""]),
            "age": int(rng.integers(18, 90)),
            "antig": int(rng.integers(0, 250)),
            "segmento": rng.choice(SEGMENTS + [""]),
            "canal": rng.choice(["KHE", "KAT", "KFC", "013", ""]),
            "prov": int(rng.choice([28, 8, 46, 15, 0])),
            "renta": "" if rng.random() < 0.25 else f"{rng.lognormal(11.5, 0.5):.2f}",
        }
        prods = np.zeros(24, dtype=int)
        prods[rng.random(24) < 0.15] = 1
        for m_i, m in enumerate(months):
            if m_i > 0:
                # add products: guarantee each of the 22 is added by some customer
                prods[2 + (k + m_i) % 22] = 1
                prods[rng.random(24) < 0.05] = 1
                prods[rng.random(24) < 0.03] = 0
            prov = base["prov"]
            i1 = rng.choice(["1", "1.0", "1", "2.0", "3", "P", ""])
            age_s = f"{base['age']:>3}" if rng.random() < 0.5 else str(base["age"])
            antig = base["antig"] + m_i
            antig_s = "     NA" if rng.random() < 0.02 else f"{antig:>6}"
            if rng.random() < 0.01:
                antig_s = "-999999"
            row = {
                "fecha_dato": m, "ncodpers": str(ncod), "ind_empleado": base["ind_empleado"],
                "pais_residencia": base["pais_residencia"], "sexo": base["sexo"], "age": age_s,
                "fecha_alta": "2010-03-04", "ind_nuevo": "0" if antig > 6 else "1",
                "antiguedad": antig_s, "indrel": "1" if rng.random() < 0.99 else "99",
                "ult_fec_cli_1t": "", "indrel_1mes": i1, "tiprel_1mes": rng.choice(["A", "I", "", "P"]),
                "indresi": rng.choice(["S", "S", "N"]), "indext": rng.choice(["N", "S"]), "conyuemp": rng.choice(["", "", "N", "S"]),
                "canal_entrada": base["canal"], "indfall": rng.choice(["N", "N", "S"]), "tipodom": "1" if prov else "",
                "cod_prov": str(prov) if prov else "", "nomprov": PROVINCES[prov][0] if prov else "",
                "ind_actividad_cliente": str(int(rng.integers(0, 2))),
                "renta": base["renta"] if rng.random() < 0.5 else (base["renta"] or " NA"),
                "segmento": base["segmento"],
            }
            vals = [row[c] for c in RECORD_FIELDS]
            vals = [f'"{v}"' if ("," in v) else v for v in vals]
            pv = [str(p) for p in prods]
            if rng.random() < 0.02:
                pv[-2] = "NA"  # ind_nom_pens_ult1 is NA in a few real rows
            lines.append(",".join(vals + pv))
    # one fully empty (all-NA) customer row, as in the real file
    lines.append(",".join(["2015-02-28", "99999"] + [""] * 22 + ["0"] * 24))
    with tempfile.TemporaryDirectory() as td:
        csv = Path(td) / "train_ver2.csv"
        csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
        header = pd.read_csv(csv, nrows=0).columns.tolist()
        assert header == CSV_COLUMNS and len(header) == 48
        X, y = load_real(str(csv), chunksize=500)
        assert len(X) > 500 and set(y) == set(range(22)), (len(X), sorted(set(y)))
        out = Path(td) / "out"
        info = train_and_export(X, y, out, "kaggle:train_ver2.csv (self-test fake)", SEED, REAL_DESCRIPTION)
        sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == FEATURES
        _, pr = sess.run(["label", "probabilities"], record_feeds(SEED_RECORD))
        assert pr.shape == (1, 22) and abs(float(pr.sum()) - 1) < 1e-5
        card = json.loads((out / "card.json").read_text())
        assert card["fields"]["indrel_1mes"]["max"] == 5
        golden = json.loads((out / "golden.json").read_text())
        assert len(golden) == len(golden_records())
        print(f"self-test-real-path OK: {len(X)} rows from fake CSV, metrics {info['metrics']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-csv", help="Kaggle train_ver2.csv; trains on real data instead of synthetic")
    ap.add_argument("--out-dir", default=str(HERE), help="where to write model.onnx, card.json, golden.json")
    ap.add_argument("--rows", type=int, default=N_ROWS, help="synthetic rows (default %(default)s)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--max-rows", type=int, default=None, help="real data: subsample to this many rows")
    ap.add_argument("--self-test-real-path", action="store_true")
    args = ap.parse_args(argv)

    if args.self_test_real_path:
        self_test_real_path()
        return 0
    out = Path(args.out_dir)
    if args.train_csv:
        X, y = load_real(args.train_csv, max_rows=args.max_rows, seed=args.seed)
        info = train_and_export(X, y, out, "kaggle:train_ver2.csv", args.seed, REAL_DESCRIPTION)
    else:
        X, y = make_synthetic(args.rows, args.seed)
        info = train_and_export(X, y, out, "synthetic", args.seed, SYNTHETIC_DESCRIPTION)
    sha = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    print(json.dumps({**info, "model_sha256": sha, "out_dir": str(out)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

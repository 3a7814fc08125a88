"""Backbones pretrained on real PTB-XL that ship with ecgml, each with a model card.

Exporting one (what ``benchmarks/real_ptbxl.py`` calls after training; see :mod:`ecgml.pretrained.export`)::

    from ecgml.pretrained.export import export_pretrained
    folder = export_pretrained(
        source,            # weights folder | "runs:/RUN_ID" | bare run id | "models:/NAME/VERSION"
        name,              # e.g. "xresnet1d-ptbxl-all" (lower-case letters, digits, - _ .)
        metrics={"val_macro_auc": 0.93, "val_macro_auc_low": 0.92, "val_macro_auc_high": 0.94},  # fold 9
        command="python benchmarks/real_ptbxl.py --root ... --task all",  # verbatim
        commit="<git sha>",
        out_dir=SHIPPED_DIR,         # default: ecgml/pretrained/models/
        data_release="1.0.3", train_folds=(1, ..., 8), selection_folds=(9,),
        description="", training={"epochs": 30, "minutes": 28.0}, dtype="float16", overwrite=False)

Using them::

    from ecgml.pretrained.shipped import list_shipped, load_shipped
    model, metadata, card = load_shipped("xresnet1d-ptbxl-all", task="all")   # verified, float32, eval()
    from ecgml.pretrained.register import register_shipped
    register_shipped("xresnet1d-ptbxl-all", alias="production").uri       # models:/ecgml-ptbxl-backbone@production

Nothing is imported at package import: each module imports torch or MLflow when used.
"""
